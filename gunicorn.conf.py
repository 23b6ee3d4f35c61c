"""Gunicorn settings for the 2-core serving machine. Command-line flags (and GUNICORN_CMD_ARGS)
override these, e.g. `gunicorn wsgi:app --bind 0.0.0.0:8000 --workers 3`."""

import os

# Quiet TensorFlow's C++ start-up chatter in every worker (set before any worker imports it).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

bind = os.environ.get("CXR_BIND", "127.0.0.1:8000")  # put a TLS reverse proxy in front
# One process per core: each holds its own copy of the model (a few hundred MB) and predictions
# are CPU-bound. Many threads per worker, so that clients that send slowly (a bad network, or on purpose)
# cannot hold every request slot; the CPU- and memory-heavy part of an upload runs in CXR_ANALYSIS_SLOTS
# of them at a time (webapp/model_service.py). A request body is read whole before the app runs, and cut
# off (408) when it arrives too slowly (webapp/request_body.py), so a trickling client holds its thread for
# seconds and no database connection. In front of it, a buffering reverse proxy (README, "Deployment")
# reads whole requests before they reach gunicorn.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("CXR_THREADS", "16"))
# The app (and TensorFlow) is loaded in each worker after the fork: TensorFlow is not fork-safe.
preload_app = False
# A worker starts even when the model, the database or the upload folder is unusable: it answers 503
# with the reason and recovers by itself (webapp/model_service.py, webapp/errors.py), so a worker
# restarted during such a fault cannot take the whole server down. A broken model directory at launch
# still stops the master at once (on_starting below).
os.environ.setdefault("CXR_STRICT_STARTUP", "false")
# A worker loads TensorFlow and the model before its first request, and a large DICOM upload takes
# seconds to decode: both must fit in the timeout on a busy machine.
timeout = 120
graceful_timeout = 30
keepalive = 5
# No periodic worker recycling: a new worker serves only after importing TensorFlow and loading the model,
# and the workers of a busy server reach a request limit at about the same time, which stalls every
# request while both restart (bench/README.md, "Soak").
# Memory is flat without it (the soak's peak RSS per worker); `--max-requests N` turns it back on.
max_requests = 0
# Forwarding headers (X-Forwarded-Proto, -For) are believed by the app alone, from as many proxies as
# CXR_TRUSTED_PROXIES says (webapp/security.py); gunicorn would otherwise believe them from loopback.
forwarded_allow_ips = ""
# No runtime control socket (gunicornc): its default path in ~/.gunicorn would be shared by every
# instance on the machine.
control_socket_disable = True
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"  # heartbeat files off a possibly slow disk

loglevel = os.environ.get("CXR_LOG_LEVEL", "info")
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
# One format for gunicorn's error log and the application's own loggers (Flask, Alembic) on
# stderr; the access log (already formatted by access_log_format) on stdout.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"},
        "access": {"format": "%(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
        "stdout": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
    },
    "root": {"level": loglevel.upper(), "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        "alembic.runtime.plugins": {"level": "WARNING"},  # one line per plugin at every start
    },
}


def on_starting(server):
    """Refuse to start on a model directory that cannot work and bring the database schema up to date,
    before any worker loads TensorFlow; then start the DICOM listener when CXR_DICOM_LISTEN asks for it
    (`make run` does)."""
    from webapp.startup import gunicorn_master_start, start_dicom_listener

    gunicorn_master_start()
    server.dicom_listener = start_dicom_listener()


def on_exit(server):
    listener = getattr(server, "dicom_listener", None)
    if listener is not None and listener.poll() is None:
        listener.terminate()
        listener.wait(timeout=30)


def post_fork(server, worker):
    # TensorFlow threads per worker = cores // workers (cxr/runtime.py; CXR_TF_THREADS overrides).
    os.environ.setdefault("CXR_WORKERS", str(server.cfg.workers))
