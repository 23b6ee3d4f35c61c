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

from cxr.imaging import decode_image
from cxr.overlay import HEATMAP_SIDE
from tests.accounts import PASSWORD, add_user
from tests.helpers import make_legacy, png_bytes

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
def live_app(make_app):
    """The app (CSRF on), with the clinician USER (password PASSWORD)."""
    app = make_app(WTF_CSRF_ENABLED=True)
    add_user(app, USER)
    return app


@pytest.fixture
def live_server(live_app):
    """`live_app` on a loopback port."""
    server = make_server("127.0.0.1", 0, live_app, threaded=True)
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


def upload_through_form(page, image: Path, reference: str = "", force: bool = False) -> None:
    """Choose `image` on the upload page and send the form (app.js sends it with its progress shown);
    `force` stores it again even if the same file was uploaded before."""
    page.set_input_files("input[name=files]", str(image))
    page.fill("input[name=reference]", reference)
    if force:
        page.check("input[name=force]")
    page.click("input[type=submit]")


def signed_in_upload(page, live_server: str, film: Path, data: bytes) -> int:
    """Sign in, upload `data` as `film` through the form and land on its result page; the prediction's id."""
    film.write_bytes(data)
    page.goto(f"{live_server}/login")
    sign_in(page)
    upload_through_form(page, film)
    page.wait_for_url(re.compile(r"/predictions/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


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
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.click("input[type=submit]")
    expect(page.locator("[data-progress]")).to_be_visible()
    page.wait_for_url(re.compile(r"/predictions/\d+$"))  # the redirect, followed
    prediction_id = page.url.rsplit("/", 1)[1]

    label = page.locator("h1 .label").inner_text()  # the decision, in words
    assert label in ("COVID-19 features", "No COVID-19 features", "Indeterminate — read it yourself")
    # The calibrated p(COVID-19) on its bar, with the threshold marked: the bar agrees with the badge.
    meter = page.locator(".covid-meter")
    expect(meter).to_be_visible()
    p_covid, threshold = float(meter.get_attribute("data-p")), float(meter.get_attribute("data-threshold"))
    fill = page.locator("[data-meter-fill]").bounding_box()
    line = page.locator("[data-meter-threshold]").bounding_box()
    track = page.locator(".covid-meter svg").bounding_box()
    assert fill["width"] == pytest.approx(track["width"] * p_covid, abs=1.5)
    assert line["x"] + line["width"] / 2 - track["x"] == pytest.approx(track["width"] * threshold, abs=2)
    assert (fill["width"] >= line["x"] + line["width"] / 2 - track["x"]) == (label == "COVID-19 features")
    page.locator(".all-probabilities summary").click()
    expect(page.locator(".all-probabilities tbody tr")).to_have_count(len(bundle.classes))
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

    # The heat layer is the stored heatmap, coloured here: the server rendered no overlay for the page (the
    # plain image's is lazy), and the colour lies within the crop box the model saw.
    assert any(url.endswith(f"/predictions/{prediction_id}/heatmap.png") for url in requested)
    assert not [url for url in requested if "/overlay." in url]
    heat = page.locator("[data-heat-canvas]")
    expect(heat).to_be_visible()
    film = decode_image(chest_png)
    top, bottom, left, right = bundle.predict(film.pixels).box
    width = heat.evaluate("c => c.width")
    scale = width / film.pixels.shape[1]
    margin = max(film.pixels.shape) / HEATMAP_SIDE * scale + 1  # one stored heatmap pixel, smoothed
    inside, outside = heat.evaluate(
        """(c, [top, bottom, left, right, margin]) => {
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let inside = 0, outside = 0;
        for (let y = 0; y < c.height; y++) { for (let x = 0; x < c.width; x++) {
            if (data[(y * c.width + x) * 4 + 3] === 0) { continue; }
            const within = y + 0.5 > top - margin && y + 0.5 < bottom + margin
                && x + 0.5 > left - margin && x + 0.5 < right + margin;
            if (within) { inside++; } else { outside++; }
        } }
        return [inside, outside]; }""",
        [top * scale, bottom * scale, left * scale, right * scale, margin],
    )
    assert inside > 0.05 * (bottom - top) * (right - left) * scale**2 and outside == 0
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


def test_priors_compare_print_theme_and_token_copy(live_server, page, page_errors, tmp_path, chest_png):
    from playwright.sync_api import expect

    image = tmp_path / "chest.png"
    image.write_bytes(chest_png)
    page.goto(f"{live_server}/login")
    sign_in(page)
    ids = []
    for again in (False, True):
        page.goto(f"{live_server}/")
        upload_through_form(page, image, reference="PRIOR-1", force=again)
        page.wait_for_url(re.compile(r"/predictions/\d+$"))
        ids.append(page.url.rsplit("/", 1)[1])
    first, second = ids
    assert first != second

    # The same file again, without "store it again": its existing prediction opens, and says so.
    page.goto(f"{live_server}/")
    upload_through_form(page, image, reference="PRIOR-1")
    page.wait_for_url(re.compile(rf"/predictions/{second}$"))
    expect(page.locator(".flash-info")).to_contain_text(f"was uploaded before: prediction #{second}")

    compare = page.locator("#priors a.compare")
    expect(compare).to_have_count(1)
    expect(compare).to_have_attribute("href", f"/predictions/{second}/compare/{first}")
    expect(page.locator("#priors img.thumb")).to_have_attribute("src", f"/predictions/{first}/thumbnail.jpg")

    # A reading that cannot be saved: its errors are focused (so scrolled to) and announced.
    page.check("input[name=reading][value=other]")
    page.check("input[name=status][value=preliminary]")
    page.get_by_role("button", name="Save reading").click()
    summary = page.locator("#review-errors")
    expect(summary).to_have_attribute("role", "alert")
    expect(summary).to_contain_text("Name the other finding in the comment.")
    page.wait_for_function("document.readyState === 'complete'")  # the viewer above it has loaded too
    expect(summary).to_be_focused()
    expect(summary).to_be_in_viewport()
    assert page_errors == ["Failed to load resource: the server responded with a status of 400 (BAD REQUEST)"]
    page_errors.clear()  # Chromium reports the refused form's status; expected here

    # Print, with a reading: one A4 page, without navigation, priors or forms.
    page.check("input[name=reading][value=negative]")
    page.check("input[name=status][value=final]")
    page.fill("textarea[name=comment]", "Read on the browser's page.")
    page.get_by_role("button", name="Save reading").click()
    page.wait_for_url(re.compile(rf"/predictions/{second}#reviews$"))
    expect(page.locator(".reviews")).to_contain_text("Negative for pneumonia")
    page.emulate_media(media="print")
    expect(page.locator(".site-header")).to_be_hidden()
    expect(page.locator("#priors")).to_be_hidden()
    expect(page.locator("#own-review")).to_be_hidden()  # no empty "Edit your reading" heading or its hint
    expect(page.locator(".review-edit .hint")).to_be_hidden()
    expect(page.locator(".reviews")).to_be_visible()
    expect(page.locator(".images")).to_be_visible()
    # In print the plain images show, and so their lazy overlay is fetched (rendered on request) and drawn.
    page.wait_for_function("[...document.querySelectorAll('.images img')].every(i => i.complete && i.naturalWidth > 0)")
    expect(page.locator(".images img")).to_have_count(2)
    pdf = page.pdf(format="A4", print_background=True)
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf)) == 1
    page.emulate_media(media="screen")

    compare.click()
    page.wait_for_url(re.compile(rf"/predictions/{second}/compare/{first}$"))
    expect(page.locator("[data-viewer][data-ready]")).to_have_count(2)

    # Linked: zoom, pan and window in one viewer move the other; unlinked, they do not.
    link = page.locator("[data-link-viewers]")
    expect(link).to_be_checked()
    one, other = page.locator("[data-viewer]").nth(0), page.locator("[data-viewer]").nth(1)
    one.locator("[data-viewport]").focus()
    page.keyboard.press("+")
    page.keyboard.press("ArrowLeft")
    expect(other).to_have_attribute("data-scale", one.get_attribute("data-scale"))
    assert other.locator("[data-stage]").evaluate("s => s.style.transform") == one.locator("[data-stage]").evaluate(
        "s => s.style.transform"
    )
    one.locator("[data-control=level]").fill("100")
    expect(other).to_have_attribute("data-window", "100/255")
    link.uncheck()
    linked_scale = other.get_attribute("data-scale")
    one.locator("[data-viewport]").focus()
    page.keyboard.press("+")
    expect(one).not_to_have_attribute("data-scale", linked_scale)
    expect(other).to_have_attribute("data-scale", linked_scale)
    one.locator("[data-control=level]").fill("90")
    expect(other).to_have_attribute("data-window", "100/255")
    link.check()  # linking again brings the other to the first
    expect(other).to_have_attribute("data-scale", one.get_attribute("data-scale"))
    expect(other).to_have_attribute("data-window", "90/255")

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


PLOT_PIXELS = """img => {
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    const legend = context.getImageData(58, 4, 100, 14).data;  // the first legend entry's text
    let dark = 0; for (let i = 0; i < legend.length; i += 4) { if (legend[i] < 100 && legend[i + 2] < 100) dark++; }
    return {corner: Array.from(data.slice(0, 3)), legendDark: dark};
}"""


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_monitoring_plot_is_readable_in_both_themes(live_server, page, tmp_path, chest_png, theme):
    from playwright.sync_api import expect

    signed_in_upload(page, live_server, tmp_path / "film.png", chest_png)
    page.goto(f"{live_server}/monitoring")
    page.evaluate(f"localStorage.setItem('cxr-theme', '{theme}')")
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", theme)
    plot = page.locator(".monitoring-plot img")
    expect(plot).to_be_visible()
    page.wait_for_function("document.querySelector('.monitoring-plot img').complete")
    assert plot.evaluate("img => getComputedStyle(img).backgroundColor") == "rgb(255, 255, 255)"
    pixels = plot.evaluate(PLOT_PIXELS)
    assert pixels["corner"] == [255, 255, 255]  # its own white paper, not the page's black image background
    assert pixels["legendDark"] > 20  # the legend's label, in dark ink on it
    expect(page.locator(".monitoring-plot figcaption")).to_contain_text("reviewed share (blue)")


def test_viewer_windows_a_dicoms_full_depth(live_server, page, tmp_path, chest_png):
    """The viewer windows the DICOM's 12 bits, not the 8-bit film: two neighbours one unit apart (the same
    grey in the 8-bit film) come apart under a one-unit window; the DICOM's window is the default."""
    from playwright.sync_api import expect

    from tests.test_full_depth import chest_dicom

    data, values = chest_dicom(chest_png)
    depth = values.astype(int) - int(values.min())
    signed_in_upload(page, live_server, tmp_path / "study.dcm", data)
    viewer = page.locator("[data-viewer][data-ready]")
    expect(viewer).to_have_attribute("data-bits", "12")
    center, width = 2100 - int(values.min()), 4000
    expect(viewer).to_have_attribute("data-window", f"{center}/{width}")  # the DICOM's own window
    expect(page.locator("[data-depth-status]")).to_have_text("Full depth: 12 bits")

    rows, columns = np.nonzero((depth[:, 1:] == depth[:, :-1] + 1) & (values[:, 1:] // 16 == values[:, :-1] // 16))
    y, x = int(rows[len(rows) // 2]), int(columns[len(columns) // 2])
    level = depth[y, x]
    page.locator("[data-control=level]").fill(str(level))
    page.locator("[data-control=width]").fill("1")
    expect(viewer).to_have_attribute("data-window", f"{level}/1")
    shown = page.locator("[data-film-canvas]").evaluate(
        f"c => Array.from(c.getContext('2d').getImageData({x}, {y}, 2, 1).data.filter((_, i) => i % 4 === 0))"
    )
    assert shown == [128, 255]  # one unit apart, two greys apart on screen

    page.get_by_role("button", name="Bone").click()
    maximum = int(depth.max())
    expect(viewer).to_have_attribute("data-window", f"{round(0.8 * maximum)}/{round(0.35 * maximum)}")
    page.locator("[data-viewport]").focus()
    page.keyboard.press("r")
    expect(viewer).to_have_attribute("data-window", f"{center}/{width}")


def test_a_prediction_stored_before_heatmaps_shows_its_stored_overlay(live_app, live_server, page, tmp_path, chest_png):
    """A row with an overlay file and no heatmap: the viewer takes its heat layer from the stored overlay."""
    from playwright.sync_api import expect

    prediction_id = signed_in_upload(page, live_server, tmp_path / "old.png", chest_png)
    expect(page.locator("[data-viewer][data-ready]")).to_be_visible()  # nothing left to fetch
    make_legacy(live_app, prediction_id)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.reload()
    viewer = page.locator("[data-viewer][data-ready]")
    expect(viewer).to_have_attribute("data-overlay", f"/predictions/{prediction_id}/overlay.jpg")
    assert not [url for url in requested if "/heatmap." in url]
    coloured = page.locator("[data-heat-canvas]").evaluate("""c => {
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < data.length; i += 4) { if (data[i] > 0) { n++; } } return n; }""")
    assert coloured > 0


def test_phone_layout_disabled_button_and_back(browser, live_server, tmp_path, chest_png):
    """On a phone the film is above the fold and the worklist's filters are folded; a disabled Analyse
    button looks disabled; Back from a result returns to the upload page."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        image = tmp_path / "film.png"
        image.write_bytes(chest_png)
        page.goto(f"{live_server}/login")
        sign_in(page)
        page.goto(f"{live_server}/")
        button = page.locator("input[type=submit][value=Analyse]")
        enabled = button.evaluate("b => getComputedStyle(b).opacity")
        button.evaluate("b => { b.disabled = true; }")
        assert (enabled, button.evaluate("b => getComputedStyle(b).opacity")) == ("1", "0.5")
        assert button.evaluate("b => getComputedStyle(b).cursor") == "not-allowed"
        button.evaluate("b => { b.disabled = false; }")

        upload_through_form(page, image)
        page.wait_for_url(re.compile(r"/predictions/\d+$"))
        viewport = page.locator("[data-viewer][data-ready] [data-viewport]")
        expect(viewport).to_be_visible()
        top = viewport.bounding_box()["y"] + page.evaluate("window.scrollY")
        assert top < 844 - 150, top  # at least 150 px of the film show without scrolling

        page.go_back()
        page.wait_for_url(f"{live_server}/")
        expect(page.get_by_role("heading", name="Analyse chest X-rays")).to_be_visible()

        page.goto(f"{live_server}/history")
        expect(page.locator("details.filter-box")).not_to_have_attribute("open", "")
        expect(page.locator("form.filters")).to_be_hidden()
        page.locator("details.filter-box summary").click()
        expect(page.locator("form.filters")).to_be_visible()
    finally:
        context.close()
