"""Blueprints: upload, results (detail, review, images), history, model card, JSON API, health, sign-in,
account and administration."""

from flask import Flask

from webapp.views import account, admin, api, auth, health, history, model, results, upload


def register(app: Flask) -> None:
    for module in (upload, results, history, model, api, health, auth, account, admin):
        app.register_blueprint(module.bp)
