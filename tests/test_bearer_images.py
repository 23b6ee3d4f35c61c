"""A bad bearer token on any route, the image routes included, gets 401 with the security headers."""

from __future__ import annotations

import pytest

from tests.accounts import add_user, token_for


@pytest.mark.parametrize("header", ["Bearer garbage", "Bearer cxr_" + "0" * 40, "Bearer ", "Basic abc"])
@pytest.mark.parametrize(
    "path", ["/predictions/{id}/image.png", "/predictions/{id}/thumbnail.jpg", "/api/v1/predictions/{id}"]
)
def test_bad_bearer_tokens_on_token_routes_get_401(app, upload, path, header):
    url = path.format(id=upload()["id"])
    response = app.test_client().get(url, headers={"Authorization": header})
    assert response.status_code == 401, response.get_data(as_text=True)[:300]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"]


def test_revoked_and_disabled_tokens_on_an_image_get_401(app, client, upload):
    from webapp.accounts import find_user, set_active
    from webapp.db import ApiToken, db, utcnow

    image = f"/predictions/{upload()['id']}/image.png"
    token = token_for(app, "clinician")
    headers = {"Authorization": f"Bearer {token}"}
    assert app.test_client().get(image, headers=headers).status_code == 200
    with app.app_context():
        for row in db.session.scalars(db.select(ApiToken)):
            row.revoked_at = utcnow()
        db.session.commit()
    assert app.test_client().get(image, headers=headers).status_code == 401
    second = token_for(app, "clinician")
    with app.app_context():
        set_active(find_user("clinician"), False)
        db.session.commit()
    assert app.test_client().get(image, headers={"Authorization": f"Bearer {second}"}).status_code == 401


def test_disabling_a_user_revokes_their_tokens_for_good(app):
    from webapp.accounts import find_user, set_active
    from webapp.db import db

    add_user(app, "dana")
    token = token_for(app, "dana")
    headers = {"Authorization": f"Bearer {token}"}
    assert app.test_client().get("/api/v1/predictions", headers=headers).status_code == 200
    with app.app_context():
        set_active(find_user("dana"), False)
        db.session.commit()
        set_active(find_user("dana"), True)  # enabled again: the old tokens stay revoked
        db.session.commit()
    assert app.test_client().get("/api/v1/predictions", headers=headers).status_code == 401
