"""The README's screenshots of the result page, the compare page and the worklist, taken in headless Chromium
(Debian's, as the browser tests use) from the app on a throwaway instance folder and a free loopback port,
with the shipped model and synthetic films only (no patient or shared data set image):

    .venv/bin/python -m tools.screenshots --out docs/screenshots
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import threading
from pathlib import Path

import numpy as np
from werkzeug.serving import make_server

from tools.common import ROOT
from tools.films import png_bytes, synthetic_chest

CHROMIUM = Path("/usr/bin/chromium")
USER = "dr-lee"
VIEWPORT = {"width": 1280, "height": 900}


def accepted_films(app, count: int) -> list[bytes]:
    """`count` synthetic films the model's gate accepts (so that they are analysed, not refused)."""
    from cxr.gate import assess
    from cxr.imaging import decode_image
    from webapp.model_service import model_service

    films = []
    with app.app_context():
        bundle = model_service.bundle
        for seed in range(40):
            data = png_bytes(np.fliplr(synthetic_chest(seed)) if seed % 2 else synthetic_chest(seed))
            image = decode_image(data)
            if assess(image, bundle.predict(image.frame), bundle.gate).accepted:
                films.append(data)
            if len(films) == count:
                return films
    raise SystemExit("The model's gate accepts too few synthetic films for the screenshots.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from webapp import create_app
    from webapp.accounts import create_user
    from webapp.db import db
    from webapp.startup import prepare_database

    password = secrets.token_urlsafe(16)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(
            {
                "INSTANCE_PATH": str(Path(folder, "instance")),
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{Path(folder, 'cxr.sqlite')}",
                "UPLOAD_FOLDER": str(Path(folder, "uploads")),
                "SECRET_KEY": secrets.token_hex(16),
                "ADMIN_PASSWORD": secrets.token_urlsafe(16),
            }
        )
        prepare_database(app)
        with app.app_context():
            create_user(USER, password, "clinician")
            db.session.commit()
        films = accepted_films(app, 3)
        for index, data in enumerate(films):
            Path(folder, f"film-{index}.png").write_bytes(data)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{server.server_port}"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"])
                page = browser.new_context(viewport=VIEWPORT).new_page()
                page.goto(f"{base}/login")
                page.fill("input[name=username]", USER)
                page.fill("input[name=password]", password)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url(lambda url: "/login" not in url)
                ids = []
                for index in range(len(films)):
                    page.goto(f"{base}/")
                    page.set_input_files("input[name=files]", str(Path(folder, f"film-{index}.png")))
                    page.fill("input[name=reference]", "MRN-0042" if index < 2 else "MRN-0043")
                    page.click("input[type=submit]")
                    page.wait_for_url(lambda url: "/predictions/" in url)
                    ids.append(page.url.rsplit("/", 1)[1])
                page.goto(f"{base}/predictions/{ids[0]}")
                page.check("input[name=reading][value=negative]")
                page.check("input[name=status][value=preliminary]")
                page.get_by_role("button", name="Save reading").click()
                page.wait_for_url(lambda url: url.endswith("#reviews"))

                page.goto(f"{base}/predictions/{ids[2]}")
                page.get_by_role("button", name="Flag urgent").click()
                page.wait_for_url(lambda url: url.endswith(f"/predictions/{ids[2]}"))

                page.goto(f"{base}/predictions/{ids[1]}")
                page.locator("[data-viewer][data-ready]").wait_for()
                page.screenshot(path=str(args.out / "result.png"), full_page=True)
                page.goto(f"{base}/predictions/{ids[1]}/compare/{ids[0]}")
                page.locator("[data-viewer][data-ready]").nth(1).wait_for()
                page.screenshot(path=str(args.out / "compare.png"))
                page.goto(f"{base}/history")
                page.screenshot(path=str(args.out / "worklist.png"))
                browser.close()
        finally:
            server.shutdown()
            thread.join()
            with app.app_context():
                db.engine.dispose()
    for name in ("result", "compare", "worklist"):
        print(args.out / f"{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
