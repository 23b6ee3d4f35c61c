"""Where an upload's time goes inside the app, without HTTP: each step of `POST /api/v1/predictions`
timed through Flask's test client, against the prediction itself.

    python -m bench.app_overhead [--images 30] [--rounds 4] [--json bench/results/app_overhead.json]

One process, 1 TensorFlow thread (what each gunicorn worker gets), a throwaway SQLite database and
upload folder, a clinician with an API token. The functions below are wrapped with a timer, so a step's
figure includes everything it calls; "per upload" is the mean time summed over its calls in one upload.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.common import MODEL_DIR, ForeignCpu, machine, median, read_images, save_json, table
from tools.load import multipart

# (label, module or class, attribute): the steps of an upload, outermost first.
STEPS = (
    ("whole request (Flask app)", "app", "wsgi_app"),
    ("token check (before_request)", "webapp.accounts", "bearer_user"),
    ("form and multipart parsing", "webapp.views.api", "ApiUploadForm"),
    ("decode, predict, gate", "webapp.analysis", "analyse"),
    ("stored files (encoding)", "webapp.analysis", "stored_files"),
    ("file writes", "pathlib", "Path.write_bytes"),
    ("SQL flushes", "sqlalchemy.orm", "Session.flush"),
    ("commit (includes its flush)", "sqlalchemy.orm", "Session.commit"),
    ("JSON answer", "webapp.views.api", "stored_json"),
)


def _wrap(owner: Any, name: str, label: str, times: dict[str, list[float]]) -> None:
    original: Callable = getattr(owner, name)

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            times[label].append((time.perf_counter() - started) * 1000.0)

    setattr(owner, name, timed)


def measure(images: int, rounds: int, model_dir: Path) -> dict[str, Any]:
    os.environ.setdefault("CXR_TF_THREADS", "1")
    os.environ.setdefault("CXR_TF_INTER_THREADS", "1")
    from cxr.runtime import configure_threads

    configure_threads()
    import importlib

    from bench.inprocess import full_prediction
    from cxr.bundle import ModelBundle
    from webapp import create_app
    from webapp.accounts import create_user, issue_token
    from webapp.db import db
    from webapp.startup import prepare_database

    bundle = ModelBundle(model_dir)
    folder = tempfile.mkdtemp(prefix="cxr-app-overhead-")
    app = create_app(
        {
            "INSTANCE_PATH": folder,
            "MODEL_BUNDLE": bundle,
            "SECRET_KEY": "bench",
            "ADMIN_PASSWORD": "bench-admin-password",
            "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        }
    )
    prepare_database(app)
    with app.app_context():
        user = create_user("bench", "bench-password-1", "clinician")
        token, _ = issue_token(user, "app overhead")
        db.session.commit()
    blobs = [(name, data) for name, data in read_images(images * 2) if full_prediction(bundle, data)][:images]
    bodies = [multipart(name, data) for name, data in blobs]
    headers = {"Authorization": f"Bearer {token}"}
    client = app.test_client()

    def upload(body: bytes, content_type: str) -> None:
        response = client.post(
            "/api/v1/predictions?force=1", data=body, headers={**headers, "Content-Type": content_type}
        )
        if response.status_code != 201:
            raise RuntimeError(f"upload answered {response.status_code}: {response.get_data(as_text=True)[:300]}")

    times: dict[str, list[float]] = collections.defaultdict(list)
    for label, module, attribute in STEPS:
        owner: Any = app if module == "app" else importlib.import_module(module)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        _wrap(owner, name, label, times)
    # Flask-Login keeps its own reference to the request loader.
    app.login_manager._request_callback = sys.modules["webapp.accounts"].bearer_user
    for body, content_type in bodies[:5]:  # warm-up: caches, statement compilation
        upload(body, content_type)
    times.clear()
    bare: list[float] = []
    for _ in range(rounds):
        for (_, data), (body, content_type) in zip(blobs, bodies):
            upload(body, content_type)
            started = time.perf_counter()
            full_prediction(bundle, data)
            bare.append((time.perf_counter() - started) * 1000.0)
    uploads = rounds * len(bodies)
    return {
        "uploads": uploads,
        "model_version": bundle.version,
        "in_process_full_prediction_p50_ms": median(bare),
        "steps": {
            label: {
                "p50_ms": median(times[label]),
                "per_upload_ms": sum(times[label]) / uploads,
                "calls_per_upload": len(times[label]) / uploads,
            }
            for label, _, _ in STEPS
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=30, help="distinct real X-rays")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    foreign = ForeignCpu()
    result = measure(args.images, args.rounds, args.model)
    steps = result["steps"]
    print(
        f"An upload inside the app on {machine()['cpu']}, model {result['model_version']}, "
        f"{result['uploads']} uploads\n"
    )
    print(
        table(
            ["step", "p50 ms", "per upload ms", "calls per upload"],
            [[label, s["p50_ms"], s["per_upload_ms"], s["calls_per_upload"]] for label, s in steps.items()],
            digits=2,
        )
    )
    whole = steps["whole request (Flask app)"]["per_upload_ms"]
    work = steps["decode, predict, gate"]["per_upload_ms"] + steps["stored files (encoding)"]["per_upload_ms"]
    print(
        f"\nThe app's own work around the prediction and its files: {whole - work:.2f} ms per upload "
        f"(in-process full prediction p50 in the same process: {result['in_process_full_prediction_p50_ms']:.2f} ms)"
    )
    print(foreign.line())
    save_json(args.json, {"benchmark": "app_overhead", **result, "foreign_cpu": foreign.result()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
