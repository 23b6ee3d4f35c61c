"""Test helpers for accounts: add users and sign clients in through the real sign-in form."""

from __future__ import annotations

PASSWORD = "correct horse battery"


def add_user(app, name: str, role: str = "clinician", password: str = PASSWORD) -> int:
    from webapp.accounts import create_user
    from webapp.db import db

    with app.app_context():
        user = create_user(name, password, role)
        db.session.commit()
        return user.id


def csrf_token(client, path: str) -> str | None:
    """The CSRF token of the form on `path` (None when CSRF protection is off)."""
    import re

    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', client.get(path).get_data(as_text=True))
    return found.group(1) if found else None


def signed_in(app, name: str, password: str = PASSWORD):
    """A test client signed in as `name` through the sign-in form."""
    client = app.test_client()
    token = csrf_token(client, "/login")
    data = {"username": name, "password": password, **({"csrf_token": token} if token else {})}
    response = client.post("/login", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def clinician_client(app, name: str = "clinician"):
    """A new clinician account on `app`, and a client signed in as it."""
    add_user(app, name)
    return signed_in(app, name)


def token_for(app, name: str, label: str = "tests") -> str:
    from webapp.accounts import find_user, issue_token
    from webapp.db import db

    with app.app_context():
        token, _ = issue_token(find_user(name), label)
        db.session.commit()
        return token
