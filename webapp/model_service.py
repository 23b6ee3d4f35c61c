"""The model service: a Flask extension that owns the model's whole lifecycle in a process.

`model_service.init_app(app)` registers it; nothing is loaded then, so `flask` commands that need no
model start fast. The bundle is loaded once per process: by `preload` (wsgi.py, i.e. each gunicorn
worker before its first request) or on the first request that needs it. A test configuration may
hand over a ready bundle as MODEL_BUNDLE (loading TensorFlow takes seconds).

With `STRICT_STARTUP` (the default) a model that cannot be loaded raises `ModelBundleError` at once.
Without it (gunicorn workers, see gunicorn.conf.py) the worker starts anyway; every request that needs
the model answers 503 with the reason, and the load is retried at most every `MODEL_RETRY_SECONDS`, so
a restored model directory is picked up without a restart. A loaded model stays in memory: removing its
files shows only when a worker (re)starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from flask import Flask, current_app

from cxr.bundle import ModelBundle
from cxr.errors import ModelBundleError
from cxr.runtime import configure_threads

EXTENSION_KEY = "cxr.model_service"


class ModelUnavailable(ModelBundleError):
    """No model is loaded in this worker; the message says why and how to restore it."""


@dataclass
class _State:
    slots: threading.BoundedSemaphore
    bundle: ModelBundle | None = None
    error: str | None = None
    last_attempt: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelService:
    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        slots = threading.BoundedSemaphore(int(app.config["ANALYSIS_SLOTS"]))
        app.extensions[EXTENSION_KEY] = _State(slots=slots, bundle=app.config.get("MODEL_BUNDLE"))

    @contextmanager
    def analysis_slot(self) -> Iterator[None]:
        """Hold one of the ANALYSIS_SLOTS of this process while decoding and predicting an upload.

        A worker has many threads so that slow clients cannot occupy them all; the memory- and CPU-heavy
        part of an upload runs in at most this many of them at once, the others wait here."""
        with self._state().slots:
            yield

    @staticmethod
    def _state(app: Flask | None = None) -> _State:
        return (app or current_app).extensions[EXTENSION_KEY]

    def preload(self, app: Flask) -> ModelBundle | None:
        """Load the model now, before serving; raises with STRICT_STARTUP, else records the error."""
        bundle = self.load(app, force=True)
        if bundle is None and app.config["STRICT_STARTUP"]:
            raise ModelBundleError(self._state(app).error)
        return bundle

    def load(self, app: Flask | None = None, force: bool = False) -> ModelBundle | None:
        """The loaded bundle, loading it from MODEL_DIR if needed (thread-safe; without `force`, at most one
        attempt per MODEL_RETRY_SECONDS); None when it cannot be loaded."""
        app = app or current_app._get_current_object()
        state = self._state(app)
        if state.bundle is not None:
            return state.bundle
        with state.lock:
            if state.bundle is not None:
                return state.bundle
            if not force and time.monotonic() - state.last_attempt < float(app.config["MODEL_RETRY_SECONDS"]):
                return None
            state.last_attempt = time.monotonic()
            configure_threads()  # TensorFlow's thread pools, before it starts in this process (cxr/runtime.py)
            started = time.perf_counter()
            try:
                bundle = ModelBundle(app.config["MODEL_DIR"])
            except ModelBundleError as exc:
                message = str(exc)
            except Exception as exc:  # a truncated or unreadable file fails inside Keras or joblib
                app.logger.exception("The model in %s cannot be read", app.config["MODEL_DIR"])
                message = f"The model in {app.config['MODEL_DIR']} cannot be read ({type(exc).__name__}: {exc})."
            else:
                if state.error:
                    app.logger.warning("The model is available again (version %s)", bundle.version)
                app.logger.info(
                    "Loaded model %s from %s in %.1f s", bundle.version, bundle.directory, time.perf_counter() - started
                )
                state.bundle, state.error = bundle, None
                return bundle
            if state.error != message:
                app.logger.error("The model cannot be loaded; predictions answer 503 until it can: %s", message)
            state.error = message
            return None

    @property
    def bundle(self) -> ModelBundle:
        """The loaded bundle, loading it if needed; raises `ModelUnavailable` (answered 503) when it cannot be."""
        bundle = self.load()
        if bundle is None:
            raise ModelUnavailable(
                "The prediction model is not available on this server right now. "
                + (self.error or "It is being loaded; try again in a few seconds.")
            )
        return bundle

    @property
    def loaded(self) -> ModelBundle | None:
        """The bundle if it is loaded already (never loads: for pages that render without it)."""
        return self._state().bundle

    @property
    def error(self) -> str | None:
        """Why the last load failed; None once a model is loaded."""
        return self._state().error

    def unload(self, app: Flask) -> None:
        """Forget the loaded bundle (tests: a worker whose model has gone)."""
        self._state(app).bundle = None


model_service = ModelService()


def init_app(app: Flask) -> None:
    model_service.init_app(app)
