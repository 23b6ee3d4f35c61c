"""End to end in headless Chromium: sign in through the real form, upload through the real form (CSRF
on), read the result page, find the prediction in the history; an anonymous visit lands on the sign-in
page and returns to the page it asked for."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.accounts import PASSWORD, add_user

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's Chromium: apt-get install -y chromium chromium-driver"
    ),
]


USER = "browser-clinician"


@pytest.fixture
def live_server(make_app):
    """The app (CSRF on) on a loopback port, with the clinician USER (password PASSWORD)."""
    app = make_app(WTF_CSRF_ENABLED=True)
    add_user(app, USER)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page
        browser.close()
    assert errors == []  # no script errors, failed loads or CSP complaints


def sign_in(page, username: str = USER, password: str = PASSWORD) -> None:
    """Fill in and send the sign-in form the page shows."""
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)


def test_anonymous_visit_lands_on_sign_in_then_returns(live_server, page):
    from playwright.sync_api import expect

    page.goto(f"{live_server}/history")
    page.wait_for_url(re.compile(r"/login\?next=%2Fhistory$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("table.history")).to_have_count(0)  # nothing of the history shows
    sign_in(page)
    page.wait_for_url(re.compile(r"/history$"))
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    expect(page.get_by_role("link", name=USER, exact=True)).to_be_visible()  # signed in, in the header


def test_upload_result_and_history(live_server, page, tmp_path, chest_png, bundle):
    from playwright.sync_api import expect

    image = tmp_path / "browser-chest.png"
    image.write_bytes(chest_png)
    page.goto(f"{live_server}/")
    page.wait_for_url(re.compile(r"/login"))
    sign_in(page)
    page.wait_for_url(re.compile(r"/$"))
    page.set_input_files("input[name=files]", str(image))
    expect(page.locator("[data-chosen] li")).to_have_text(re.compile(r"browser-chest\.png"))
    page.fill("input[name=reference]", "E2E-42")
    page.fill("textarea[name=note]", "from the browser test")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/predictions/\d+$"))
    prediction_id = page.url.rsplit("/", 1)[1]

    label = page.locator("h1 .label").inner_text()  # the decision
    assert label in [*bundle.classes, "indeterminate"]
    expect(page.locator("table.probabilities").first.locator("tbody tr")).to_have_count(len(bundle.classes))
    for cls in bundle.classes:
        expect(page.locator(f'progress[aria-label="p({cls})"]').first).to_be_visible()
    expect(page.locator(".probability")).to_have_text(re.compile(r"\d+\.\d %"))
    expect(page.get_by_text("Research use only, not a diagnosis").first).to_be_visible()
    overlay = page.locator("img#overlay")
    expect(overlay).to_be_visible()
    assert overlay.evaluate("img => img.complete && img.naturalWidth > 0")
    page.locator("input[data-opacity-target]").fill("30")
    assert overlay.evaluate("img => img.style.opacity") == "0.3"

    page.click("text=← History")
    page.wait_for_url(re.compile(r"/history$"))
    page.fill("input[name=q]", "E2E-42")
    page.get_by_role("button", name="Filter").click()  # not the header's "Sign out" button
    row = page.locator("table.history tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator(f'a[href="/predictions/{prediction_id}"]').first).to_be_visible()
    expect(row).to_contain_text(label)
    expect(row).to_contain_text("browser-chest.png")
    assert row.locator("img.thumb").evaluate("img => img.complete && img.naturalWidth > 0")
