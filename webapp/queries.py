"""The history query (in triage order unless told otherwise), narrowed by a validated `HistoryFilter`; pagination."""

from __future__ import annotations

from flask import abort, current_app, request
from flask_sqlalchemy.pagination import Pagination
from sqlalchemy import Select, case, select

from cxr.decision import INDETERMINATE, POSITIVE_CLASS
from webapp.db import Prediction, Review, db, within_dates
from webapp.forms import HistoryFilter

MAX_PAGE = 2**31 - 1
PAGE_PARAMETERS = {"page", "per_page"}  # read by `paginate`
# Each order ends on the id so that pages never overlap; predictions of a model without a COVID class
# (no p(covid)) come last either way.
ORDERS = {
    "triage": (
        Prediction.urgent.desc(),
        case((Prediction.reviews.any(), 1), else_=0),
        case((Prediction.decision == POSITIVE_CLASS, 0), (Prediction.decision == INDETERMINATE, 1), else_=2),
        Prediction.created_at.desc(),
        Prediction.id.desc(),
    ),
    "-date": (Prediction.created_at.desc(), Prediction.id.desc()),
    "date": (Prediction.created_at.asc(), Prediction.id.asc()),
    "-probability": (Prediction.positive_probability.desc().nulls_last(), Prediction.id.desc()),
    "probability": (Prediction.positive_probability.asc().nulls_last(), Prediction.id.asc()),
}


def history_select(filters: HistoryFilter) -> Select:
    """The validated filters' predictions, in their order (newest first by default)."""
    query = select(Prediction).order_by(*ORDERS[filters.sort.data or "triage"])
    if filters.reviewed.data == "no":
        query = query.where(~Prediction.reviews.any())
    elif filters.reviewed.data == "yes":
        query = query.where(Prediction.reviews.any())
    if filters.reviewer_id is not None:
        query = query.where(Prediction.reviews.any(Review.user_id == filters.reviewer_id))
    if filters.decision.data:
        query = query.where(Prediction.decision == filters.decision.data)
    if filters.predicted.data:
        query = query.where(Prediction.label == filters.predicted.data)
    query = within_dates(query, Prediction.created_at, filters.date_from.data, filters.date_to.data)
    if filters.q.data and filters.q.data.strip():
        query = query.where(Prediction.reference.icontains(filters.q.data.strip(), autoescape=True))
    return query


def paginate(query: Select) -> Pagination:
    """The page named by the `page` and `per_page` (≤ 100, default PER_PAGE) query parameters; 404 if invalid."""
    per_page = request.args.get("per_page", type=int) or int(current_app.config["PER_PAGE"])
    page = request.args.get("page", 1, type=int)
    if not 1 <= page <= MAX_PAGE:  # a page whose offset no database accepts: not found, like any empty page
        abort(404)
    return db.paginate(query, page=page, per_page=per_page, max_per_page=100)
