"""The model page: the model card rendered for people, and the training report's figures."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, render_template, send_from_directory
from werkzeug.wrappers import Response

from webapp.model_service import model_service

bp = Blueprint("model", __name__, url_prefix="/model")
MODEL_NAMES = {
    "cnn": "CNN (its own softmax)",
    "decision_tree": "Decision tree",
    "svm": "SVM",
    "random_forest": "Random forest",
    "adaboost": "AdaBoost",
    "ensemble_argmax": "Ensemble, most probable class",
    "ensemble": "Ensemble at the operating threshold (deployed)",
}

FIGURE_TITLES = {
    "roc": "ROC curves",
    "confusion_matrix": "Confusion matrices",
    "training_curves": "Training curves",
    "gradcam_grid": "Grad-CAM of 16 test films (8 per class), as the app draws it",
}


def report_dir() -> Path:
    return model_service.bundle.directory / "report"


def report_figures() -> list[str]:
    folder = report_dir()
    return sorted(path.name for path in folder.glob("*.png") if path.is_file()) if folder.is_dir() else []


@bp.get("")
def card() -> str:
    bundle = model_service.bundle
    return render_template(
        "model.html",
        card=bundle.card,
        version=bundle.version,
        figures=[(name, FIGURE_TITLES.get(name[:-4], name[:-4].replace("_", " "))) for name in report_figures()],
        model_names=MODEL_NAMES,
    )


@bp.get("/report/<name>")
def report(name: str) -> Response:
    if name not in report_figures():  # only the figures listed on the page
        abort(404)
    return send_from_directory(report_dir(), name, mimetype="image/png", max_age=3600)
