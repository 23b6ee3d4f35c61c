"""The OpenAPI 3 description of the JSON API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from cxr.decision import NEAR_THRESHOLD, POSITIVE_CLASS, UNLIKE_TRAINING
from webapp.readings import READINGS, STATUSES
from webapp.wording import COVID_FEATURES, NO_COVID_FEATURES, READ_IT_YOURSELF


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def openapi_document(classes: list[str]) -> dict[str, Any]:
    probabilities = {
        "type": "object",
        "properties": {c: {"type": "number", "minimum": 0, "maximum": 1} for c in classes},
        "required": classes,
    }
    nullable_text = {"type": ["string", "null"]}
    reading = {
        "type": "string",
        "enum": list(READINGS),
        "description": "; ".join(f"{key}: {text}" for key, text in READINGS.items()),
    }
    status = {"type": "string", "enum": list(STATUSES)}
    day = {"type": "string", "format": "date"}
    dates = [
        {"name": "date_from", "in": "query", "description": "First day (UTC), inclusive", "schema": day},
        {"name": "date_to", "in": "query", "description": "Last day (UTC), inclusive", "schema": day},
    ]
    prediction_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
    filters = [
        {"name": "decision", "in": "query", "schema": {"type": "string", "enum": [*classes, "indeterminate"]}},
        {"name": "class", "in": "query", "schema": {"type": "string", "enum": classes}},
        *dates,
        {"name": "q", "in": "query", "description": "Case-insensitive substring of the reference",
         "schema": {"type": "string"}},
        {"name": "reviewed", "in": "query", "description": "no: not yet reviewed by anyone (the worklist); "
         "yes: reviewed at least once", "schema": {"type": "string", "enum": ["no", "yes"]}},
        {"name": "reviewer", "in": "query", "description": "Reviewed by this user (username)",
         "schema": {"type": "string"}},
        {"name": "sort", "in": "query", "description": "triage (default): urgent first, then unreviewed, "
         f"{POSITIVE_CLASS} calls before indeterminate before the rest, newest first; date: by upload time; "
         f"probability: by the ensemble's p({POSITIVE_CLASS}); a leading '-' sorts descending (-probability: "
         f"likeliest {POSITIVE_CLASS} first)",
         "schema": {"type": "string", "enum": ["triage", "-date", "date", "-probability", "probability"],
                    "default": "triage"}},
        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
        {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
    ]  # fmt: skip
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "Chest X-ray triage API",
            "version": "1",
            "description": "Research use only; not a diagnosis. Predictions come from a CNN feature extractor "
            "and a soft-voting ensemble; images that do not resemble the training X-rays are refused (422).",
        },
        "servers": [{"url": "/api/v1"}],
        "paths": {
            "/predictions": {
                "post": {
                    "summary": "Analyse and store one chest X-ray; a file stored before (same SHA-256) is not "
                    "stored again: the answer is its existing prediction (200), unless force=1",
                    "parameters": [
                        {
                            "name": "force",
                            "in": "query",
                            "description": "1: analyse and store the file even if the same file was stored before",
                            "schema": {"type": "string", "enum": ["0", "1"], "default": "0"},
                        },
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "description": "A key the client makes up for this upload (e.g. a UUID). A retry by "
                            "the same user with the same key returns the prediction stored first (200) instead "
                            "of storing the film again; send it whenever a lost answer may be retried.",
                            "schema": {"type": "string", "pattern": "^[!-~]{1,128}$"},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["file"],
                                    "properties": {
                                        "file": {
                                            "type": "string",
                                            "format": "binary",
                                            "description": "PNG, JPEG, TIFF or DICOM",
                                        },
                                        "reference": {"type": "string", "maxLength": 128},
                                        "note": {"type": "string", "maxLength": 2000},
                                        "view_position": {
                                            "type": "string",
                                            "enum": ["PA", "AP"],
                                            "description": "For PNG/JPEG; a DICOM file's header wins",
                                        },
                                        "study_date": {"type": "string", "format": "date", "description": "YYYY-MM-DD"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _json("Stored prediction (`duplicate`: false)", "Prediction"),
                        "200": _json(
                            "The same file was stored before (`duplicate`: true), or a retry with the same "
                            "Idempotency-Key: the existing prediction, nothing stored",
                            "Prediction",
                        ),
                        "400": _error(
                            "Missing field, corrupt image, a `force` other than 0 or 1, or a malformed Idempotency-Key"
                        ),
                        "413": _error("Upload or image too large"),
                        "415": _error("Not a supported image format"),
                        "422": _error("Not a chest X-ray the model may judge (out-of-distribution gate)"),
                    },
                },
                "get": {
                    "summary": "List stored predictions (newest first unless `sort` says otherwise)",
                    "parameters": filters,
                    "responses": {
                        "200": _json("One page of predictions", "PredictionPage"),
                        "400": _error("Invalid filter"),
                        "404": _error("No such page"),
                    },
                },
            },
            "/predictions/{id}": {
                "get": {
                    "summary": "One stored prediction with its reviews",
                    "parameters": [prediction_id],
                    "responses": {"200": _json("The prediction", "Prediction"), "404": _error("No such prediction")},
                }
            },
            "/predictions/{id}/report.pdf": {
                "get": {
                    "summary": "The one-page A4 report of a prediction (the result page's PDF), as an attachment; "
                    "recorded in the audit trail",
                    "parameters": [prediction_id],
                    "responses": {
                        "200": {
                            "description": "The report",
                            "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
                        },
                        "404": _error("No such prediction"),
                    },
                }
            },
            "/predictions/{id}/reviews": {
                "post": {
                    "summary": "Save the caller's reading of the film (RSNA categories), preliminary or final: "
                    "one per user and prediction; a second call edits it, keeping the earlier version in `edits`",
                    "parameters": [prediction_id],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReviewInput"}}},
                    },
                    "responses": {
                        "201": _json("The new review", "Review"),
                        "200": _json("The caller's review, updated", "Review"),
                        "400": _error("Not a JSON object, an unknown field, or a field of the wrong type"),
                        "404": _error("No such prediction"),
                        "409": _error(
                            "The caller's first review was saved meanwhile by another request, or another "
                            "clinician has claimed the film"
                        ),
                        "422": _error(
                            "An unknown reading or status, a comment over 2000 characters, or `other` without a "
                            "comment naming the finding"
                        ),
                    },
                }
            },
            "/predictions/{id}/reference": {
                "post": {
                    "summary": "Set the reference of a prediction stored without one (e.g. one of the upload's "
                    "`suggested_reference` values)",
                    "parameters": [prediction_id],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["reference"],
                                    "properties": {"reference": {"type": "string", "minLength": 1, "maxLength": 128}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json("The prediction", "Prediction"),
                        "400": _error("Not a JSON object, or no usable reference"),
                        "404": _error("No such prediction"),
                        "409": _error("The prediction has a reference already"),
                    },
                }
            },
            "/monitoring": {
                "get": {
                    "summary": "The model in use, per model version and month: predictions, reviews, agreement, "
                    "decision against clinician label, indeterminate rate and OOD refusals",
                    "parameters": dates,
                    "responses": {
                        "200": _json("The figures and their definitions", "Monitoring"),
                        "400": _error("Invalid dates"),
                    },
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3 document"}}}
            },
        },
        # Every operation: a bearer token from the account page or `flask --app app create-token`, or the
        # browser session (whose unsafe requests then also need the X-CSRFToken header).
        "security": [{"bearerToken": []}, {"session": []}],
        "components": {
            "securitySchemes": {
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token: account page, or `flask --app app create-token NAME`",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "session",
                    "description": "The signed-in browser session; POST also needs the X-CSRFToken header",
                },
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "Review": {
                    "type": "object",
                    "properties": {
                        "created": {"type": "string", "format": "date-time", "description": "The first version"},
                        "updated": {"type": "string", "format": "date-time", "description": "This version"},
                        "reading": reading,
                        "reading_label": {"type": "string", "description": "The reading in words"},
                        "status": status,
                        "agrees_with_model": {
                            "type": "boolean",
                            "description": "Computed from the reading: typical agrees with a COVID-19 call, "
                            "indeterminate with an indeterminate decision, atypical, negative and other with no "
                            "COVID-19 call",
                        },
                        "comment": nullable_text,
                        "user": {**nullable_text, "description": "The reviewer"},
                        "edits": {
                            "type": "array",
                            "description": "Earlier versions, newest first",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "saved": {"type": "string", "format": "date-time"},
                                    "reading": reading,
                                    "status": status,
                                    "comment": nullable_text,
                                },
                            },
                        },
                    },
                },
                "ReviewInput": {
                    "type": "object",
                    "required": ["reading", "status"],
                    "additionalProperties": False,
                    "properties": {
                        "reading": reading,
                        "status": status,
                        "comment": {
                            "type": ["string", "null"],
                            "maxLength": 2000,
                            "description": "Free text; required (the finding) when the reading is other",
                        },
                    },
                },
                "Monitoring": {
                    "type": "object",
                    "properties": {
                        "definitions": {"type": "object", "additionalProperties": {"type": "string"}},
                        "periods": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "model_version": {"type": "string"},
                                    "month": {"type": "string", "description": "YYYY-MM (UTC) of the upload"},
                                    "predictions": {"type": "integer"},
                                    "reviewed": {"type": "integer"},
                                    "reviewed_share": {"type": ["number", "null"]},
                                    "final": {"type": "integer"},
                                    "agreed": {"type": "integer"},
                                    "agreement_rate": {"type": ["number", "null"]},
                                    "indeterminate": {"type": "integer"},
                                    "indeterminate_rate": {"type": ["number", "null"]},
                                    "ood_refusals": {"type": "integer"},
                                    "confusion": {
                                        "type": "object",
                                        "description": "decision → clinician label → count",
                                        "additionalProperties": {
                                            "type": "object",
                                            "additionalProperties": {"type": "integer"},
                                        },
                                    },
                                    "p_covid_quantiles": {
                                        "type": ["object", "null"],
                                        "description": "5, 25, 50, 75 and 95 % quantiles of the month's "
                                        "calibrated p(covid), keyed '0.05' … '0.95'",
                                        "additionalProperties": {"type": "number"},
                                    },
                                },
                            },
                        },
                        "site_checks": {
                            "type": "array",
                            "description": "Known-negative films of this hospital run through a model before "
                            "go-live (flask site-check, or Site check in the administration)",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "integer"},
                                    "created_at": {"type": "string", "format": "date-time"},
                                    "label": {"type": "string"},
                                    "model_version": {"type": "string"},
                                    "films": {"type": "integer"},
                                    "analysed": {"type": "integer"},
                                    "refused": {"type": "integer"},
                                    "unreadable": {"type": "integer"},
                                    "covid": {"type": "integer"},
                                    "indeterminate": {"type": "integer"},
                                    "normal": {"type": "integer"},
                                    "p_covid_quantiles": {
                                        "type": ["object", "null"],
                                        "additionalProperties": {"type": "number"},
                                    },
                                },
                            },
                        },
                    },
                },
                "Prediction": {
                    "type": "object",
                    "required": [
                        "id",
                        "decision",
                        "class",
                        "probabilities",
                        "cnn_probabilities",
                        "ood_score",
                        "model_version",
                        "image_url",
                        "overlay_url",
                    ],
                    "properties": {
                        "id": {"type": "integer"},
                        "decision": {
                            "type": "string",
                            "enum": [*classes, "indeterminate"],
                            "description": "The outcome to act on: the class, or indeterminate when the film is "
                            "too close to the threshold or unlike the training films to call it "
                            f"{' or '.join(c for c in classes if c != 'covid')}",
                        },
                        "decision_label": {
                            "type": "string",
                            "enum": [COVID_FEATURES, NO_COVID_FEATURES, READ_IT_YOURSELF],
                            "description": "The decision in the words shown to clinicians",
                        },
                        "indeterminate_reasons": {
                            "type": ["array", "null"],
                            "items": {"type": "string", "enum": [NEAR_THRESHOLD, UNLIKE_TRAINING]},
                            "description": "Why an indeterminate decision is so (empty for other decisions; null "
                            "for predictions stored before it was recorded)",
                        },
                        "indeterminate_reason_text": {
                            **nullable_text,
                            "description": "The reason in words; null unless indeterminate",
                        },
                        "duplicate": {
                            "type": "boolean",
                            "description": "Only in the answer to an upload: true when the same file was stored "
                            "before and this is its existing prediction",
                        },
                        "class": {"type": "string", "enum": classes},
                        "probability": {
                            "type": "number",
                            "description": "The ensemble's probability of the predicted class",
                        },
                        "probabilities": {
                            **probabilities,
                            "description": "The ensemble's probabilities, which decide the class",
                        },
                        "cnn_probabilities": {**probabilities, "description": "The CNN's own softmax"},
                        "threshold": {"type": ["number", "null"], "description": "Operating threshold on p(covid)"},
                        "ood_score": {
                            "type": "number",
                            "description": "Feature distance / its limit; at most 1 for accepted images",
                        },
                        "model_version": {"type": "string"},
                        "elapsed_ms": {"type": "number"},
                        "filename": {"type": "string"},
                        "sha256": {"type": "string"},
                        "reference": nullable_text,
                        "note": nullable_text,
                        "created": {"type": "string", "format": "date-time"},
                        "url": {"type": "string", "format": "uri"},
                        "image_url": {"type": "string", "format": "uri", "description": "The image as stored (PNG)"},
                        "overlay_url": {
                            "type": "string",
                            "format": "uri",
                            "description": "Grad-CAM of the CNN over the image (JPEG, rendered when asked for; "
                            "predictions stored before 2026-12-07 have theirs stored, PNG before 2026-11-23)",
                        },
                        "thumbnail_url": {
                            "type": "string",
                            "format": "uri",
                            "description": "JPEG (PNG for predictions stored before 2026-11-23)",
                        },
                        "depth_url": {
                            "type": ["string", "null"],
                            "format": "uri",
                            "description": "A grayscale DICOM's full bit depth as a 16-bit PNG (its modality values "
                            "less their minimum, MONOCHROME1 turned round); null for other uploads",
                        },
                        "depth_window": {
                            "type": ["object", "null"],
                            "properties": {"center": {"type": "number"}, "width": {"type": "number"}},
                            "description": "The DICOM's own WindowCenter/Width in the units of depth_url, or null",
                        },
                        "urgent": {"type": "boolean", "description": "Flagged urgent: first on the worklist"},
                        "claimed_by": {
                            **nullable_text,
                            "description": "The clinician reading it now (a claim lapses after 30 minutes); "
                            "nobody else can save a reading meanwhile (409)",
                        },
                        "claimed_at": {"type": ["string", "null"], "format": "date-time"},
                        "user": {**nullable_text, "description": "Who uploaded it"},
                        "study": {
                            "type": "object",
                            "description": "Study metadata from the DICOM header (or typed at upload) and where the "
                            "film came from: study_instance_uid, series_instance_uid, sop_instance_uid, "
                            "accession_number, view_position, portable (an AP film: where COVID-19 models err most), "
                            "laterality, modality, study_date (YYYY-MM-DD), origin ('upload', a calling AE title or "
                            "'DICOMweb') and results_sent (when the SR and secondary capture reached the PACS); "
                            "each null when unknown",
                        },
                        "reviews": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Review"},
                            "description": "Every user's review, latest first (single prediction only)",
                        },
                        "latest_review": {
                            "oneOf": [{"$ref": "#/components/schemas/Review"}, {"type": "null"}],
                            "description": "The most recently saved review: its reading is the clinician label",
                        },
                        "suggested_reference": {
                            "type": "object",
                            "description": "Only in the answer to an upload without a reference: the DICOM header's "
                            "identifiers, not stored; confirm one with POST /predictions/{id}/reference",
                            "properties": {"patient_id": {"type": "string"}, "accession_number": {"type": "string"}},
                        },
                    },
                },
                "PredictionPage": {
                    "type": "object",
                    "properties": {
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}},
                        "page": {"type": "integer"},
                        "per_page": {"type": "integer"},
                        "pages": {"type": "integer"},
                        "total": {"type": "integer"},
                        "next": {"type": ["string", "null"], "format": "uri"},
                        "prev": {"type": ["string", "null"], "format": "uri"},
                    },
                },
            },
        },
    }
    unauthorised = _error("No valid token or session: the token is missing, unknown or revoked, or its user disabled")
    for operation in (op for path in document["paths"].values() for op in path.values()):
        operation["responses"]["401"] = unauthorised
    return document
