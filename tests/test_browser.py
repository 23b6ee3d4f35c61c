"""End to end in headless Chromium: sign in through the real form, upload through the real form (CSRF
on), read the result page, find the prediction in the history; an anonymous visit lands on the sign-in
page and returns to the page it asked for."""

from __future__ import annotations

import re
import threading
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from werkzeug.serving import make_server

from tests.accounts import PASSWORD, add_user
from tests.helpers import png_bytes

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
    pytest.mark.slow,
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


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module (starting it is the slow part); each test gets its own context."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


TIMEZONE = "Asia/Kolkata"  # UTC+05:30 all year: local times differ from UTC in hours and minutes


@pytest.fixture
def page_errors() -> list[str]:
    """The page's script errors, failed loads and CSP complaints; a test removes those it expects."""
    return []


@pytest.fixture
def page(browser, page_errors):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id=TIMEZONE)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("console", lambda message: page_errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    yield page
    context.close()
    assert page_errors == []


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


def upload_through_form(page, image: Path, reference: str = "") -> None:
    """Choose `image` on the upload page and send the form (app.js sends it with its progress shown)."""
    page.set_input_files("input[name=files]", str(image))
    page.fill("input[name=reference]", reference)
    page.click("input[type=submit]")


def film_pixel(page, viewer: str = "[data-viewer]") -> int:
    """The grey value the viewer shows at the film's centre."""
    return page.locator(f"{viewer} [data-film-canvas]").evaluate(
        "c => c.getContext('2d').getImageData(c.width >> 1, c.height >> 1, 1, 1).data[0]"
    )


def test_upload_result_and_history(live_server, page, page_errors, tmp_path, chest_png, bundle):
    from playwright.sync_api import expect

    image = tmp_path / "browser-chest.png"
    image.write_bytes(chest_png)
    uniform = tmp_path / "uniform.png"
    uniform.write_bytes(png_bytes(np.full((256, 256), 128, dtype=np.uint8)))
    page.goto(f"{live_server}/")
    page.wait_for_url(re.compile(r"/login"))
    sign_in(page)
    page.wait_for_url(re.compile(r"/$"))

    # A file the gate refuses: the upload page comes back with the message, at the same address.
    upload_through_form(page, uniform)
    expect(page.locator("li.error[role=alert]")).to_contain_text("uniform.png")
    assert page.url == f"{live_server}/"
    assert page_errors == ["Failed to load resource: the server responded with a status of 422 (UNPROCESSABLE ENTITY)"]
    page_errors.clear()  # Chromium reports the refused upload's status; expected here

    page.set_input_files("input[name=files]", str(image))
    expect(page.locator("[data-chosen] li")).to_have_text(re.compile(r"browser-chest\.png"))
    page.fill("input[name=reference]", "E2E-42")
    page.fill("textarea[name=note]", "from the browser test")
    page.click("input[type=submit]")
    expect(page.locator("[data-progress]")).to_be_visible()
    page.wait_for_url(re.compile(r"/predictions/\d+$"))  # the redirect, followed
    prediction_id = page.url.rsplit("/", 1)[1]

    label = page.locator("h1 .label").inner_text()  # the decision
    assert label in [*bundle.classes, "indeterminate"]
    expect(page.locator("table.probabilities").first.locator("tbody tr")).to_have_count(len(bundle.classes))
    for cls in bundle.classes:
        expect(page.locator(f'progress[aria-label="p({cls})"]').first).to_be_visible()
    expect(page.locator(".probability")).to_have_text(re.compile(r"\d+\.\d %"))
    expect(page.get_by_role("complementary", name="Research use notice")).to_contain_text(
        "Research use only, not a diagnosis"
    )

    # Local time: the UTC stays in the tooltip.
    analysed = page.locator(".details time[data-local]")
    utc = datetime.fromisoformat(analysed.get_attribute("datetime").replace("Z", "+00:00"))
    local = utc.astimezone(ZoneInfo(TIMEZONE))
    expect(analysed).to_have_attribute("title", f"{utc:%Y-%m-%d %H:%M} UTC")
    expect(analysed).to_have_text(re.compile(rf"^{local:%Y-%m-%d %H:%M} "))

    # The viewer replaces the plain images once the film has loaded.
    viewer = page.locator("[data-viewer][data-ready]")
    expect(viewer).to_be_visible()
    expect(page.locator(".images")).to_be_hidden()
    expect(page.locator("#viewer-shortcuts")).to_be_visible()
    expect(page.locator("#viewer-shortcuts")).to_contain_text("window level down / up")
    fitted = float(viewer.get_attribute("data-scale"))
    viewport = page.locator("[data-viewport]")
    viewport.click()
    page.keyboard.press("+")
    assert float(viewer.get_attribute("data-scale")) == pytest.approx(fitted * 1.25, rel=1e-3)
    assert "scale(" in page.locator("[data-stage]").evaluate("stage => stage.style.transform")
    box = viewport.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -300)
    expect(viewer).not_to_have_attribute("data-scale", f"{fitted * 1.25:.4f}")
    assert float(viewer.get_attribute("data-scale")) > fitted * 1.25
    page.keyboard.press("0")
    assert float(viewer.get_attribute("data-scale")) == pytest.approx(fitted, rel=1e-3)

    original = film_pixel(page)  # the default window shows the film as stored
    page.locator("[data-control=level]").fill("100")
    page.locator("[data-control=width]").fill("50")
    windowed = min(255, max(0, round((original - 75) / 50 * 255)))
    expect(viewer).to_have_attribute("data-window", "100/50")
    assert film_pixel(page) == windowed
    page.locator("[data-control=invert]").check()
    assert film_pixel(page) == 255 - windowed
    viewport.focus()
    page.keyboard.press("r")  # reset the window, from the keyboard
    assert film_pixel(page) == original

    heat = page.locator("[data-heat-canvas]")
    expect(heat).to_be_visible()
    coloured = heat.evaluate("""c => {
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < data.length; i += 4) { if (data[i] > 0) { n++; } } return n; }""")
    assert coloured > 0  # the heatmap layer, taken from the stored overlay
    page.locator("[data-control=opacity]").fill("30")
    assert heat.evaluate("c => c.style.opacity") == "0.3"
    page.locator("[data-control=overlay]").uncheck()
    expect(heat).to_be_hidden()

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

    # The worklist: not yet reviewed, then reviewed by this clinician.
    page.select_option("select[name=reviewed]", "no")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("p.count")).to_have_text("1 prediction matches the filters.")
    page.select_option("select[name=reviewed]", "yes")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("p.count")).to_have_text("0 predictions match the filters.")


def test_priors_compare_print_theme_and_token_copy(live_server, page, tmp_path, chest_png):
    from playwright.sync_api import expect

    image = tmp_path / "chest.png"
    image.write_bytes(chest_png)
    page.goto(f"{live_server}/login")
    sign_in(page)
    ids = []
    for _ in range(2):
        page.goto(f"{live_server}/")
        upload_through_form(page, image, reference="PRIOR-1")
        page.wait_for_url(re.compile(r"/predictions/\d+$"))
        ids.append(page.url.rsplit("/", 1)[1])
    first, second = ids

    compare = page.locator("#priors a.compare")
    expect(compare).to_have_count(1)
    expect(compare).to_have_attribute("href", f"/predictions/{second}/compare/{first}")
    expect(page.locator("#priors img.thumb")).to_have_attribute("src", f"/predictions/{first}/thumbnail.jpg")

    # Print, with a review: one A4 page, without navigation, priors or forms.
    page.check("input[name=verdict][value=agree]")
    page.fill("textarea[name=comment]", "Agreed on the browser's page.")
    page.get_by_role("button", name="Save review").click()
    page.wait_for_url(re.compile(rf"/predictions/{second}#reviews$"))
    page.emulate_media(media="print")
    expect(page.locator(".site-header")).to_be_hidden()
    expect(page.locator("#priors")).to_be_hidden()
    expect(page.locator(".images")).to_be_visible()
    pdf = page.pdf(format="A4", print_background=True)
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf)) == 1
    page.emulate_media(media="screen")

    compare.click()
    page.wait_for_url(re.compile(rf"/predictions/{second}/compare/{first}$"))
    expect(page.locator("[data-viewer][data-ready]")).to_have_count(2)

    # The reading-room theme: chosen with the toggle, kept across pages.
    toggle = page.locator("[data-theme-toggle]")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.click()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    page.goto(f"{live_server}/account")
    page.keyboard.press("Tab")  # the skip link comes first
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    expect(page.locator("[data-theme-toggle]")).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(10, 13, 17)"

    # A new API token, copied to the clipboard.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    page.fill("input[name=label]", "monitoring")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token").inner_text()
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-status")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == token
