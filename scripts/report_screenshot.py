"""Screenshot a run's report in headless Chromium (Debian's, driven by Playwright).

    .venv/bin/python scripts/report_screenshot.py out/demo/retail/report/report.html \
        docs/report.png --height 2200 --scale 0.5

Takes the top ``--height`` CSS pixels of the page at ``--scale`` device pixels per CSS pixel
(0.5 keeps the PNG small enough to commit). Needs ``bash scripts/install_browser.sh`` first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


def main() -> int:
    """Render the report page to a PNG with headless Chromium; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path, help="report.html")
    parser.add_argument("png", type=Path, help="screenshot to write")
    parser.add_argument("--height", type=int, default=0, help="CSS pixels from the top (0: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="device pixels per CSS pixel")
    args = parser.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900},
                                device_scale_factor=args.scale)
        page.goto(args.html.resolve().as_uri(), wait_until="load")
        if args.height:
            page.screenshot(path=str(args.png), full_page=True,
                            clip={"x": 0, "y": 0, "width": 1280, "height": args.height})
        else:
            page.screenshot(path=str(args.png), full_page=True)
        browser.close()
    print(f"wrote {args.png} ({args.png.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
