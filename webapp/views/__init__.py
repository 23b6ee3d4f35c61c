"""Blueprints: upload, results (detail, review, images), history, model card, JSON API, health."""

from flask import Flask

from webapp.views import api, health, history, model, results, upload


def register(app: Flask) -> None:
    for module in (upload, results, history, model, api, health):
        app.register_blueprint(module.bp)
