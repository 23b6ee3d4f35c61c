"""Blueprints: upload, results (detail, review, reference, images, priors, report), history, model card,
monitoring, JSON API and its documentation, health, sign-in, account and administration."""

from flask import Flask
from werkzeug.routing import IntegerConverter

from webapp.views import account, admin, api, auth, docs, health, history, model, monitoring, results, upload

LARGEST_ID = 2**63 - 1  # SQL BIGINT; a larger id cannot name a row and would overflow the database driver


class RowIdConverter(IntegerConverter):
    """`<int:...>` that matches only ids a database row can have: larger ones are a plain 404."""

    def __init__(self, map, *args, **kwargs) -> None:
        kwargs.setdefault("max", LARGEST_ID)
        super().__init__(map, *args, **kwargs)


def register(app: Flask) -> None:
    app.url_map.converters["int"] = RowIdConverter
    for module in (upload, results, history, model, monitoring, api, docs, health, auth, account, admin):
        app.register_blueprint(module.bp)
