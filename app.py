"""The module `flask --app app ...` loads: it finds the application factory here.

Run `flask --app app run` for development and `gunicorn wsgi:app` in production (Makefile, README)."""

from webapp import create_app

__all__ = ["create_app"]
