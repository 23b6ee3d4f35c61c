"""WSGI entry point: `gunicorn wsgi:app` (settings in gunicorn.conf.py).

Each worker imports this after the fork and loads the model once, before its first request."""

from webapp import create_app
from webapp.model_service import model_service

app = create_app()
model_service.preload(app)
