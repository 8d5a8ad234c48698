"""Screenshot of the inpainting page for the README: serves a run, paints one stroke on a
held-out photo in headless Chromium, inpaints, and saves a small PNG.

    python experiments/app_screenshot.py --workdir runs/demo --out experiments/app_page.png
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def main() -> None:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/demo")
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--out", default="experiments/app_page.png")
    parser.add_argument("--width", type=int, default=900, help="width of the saved PNG")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    from skimage import data

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("needs Debian's chromium (apt-get install chromium)")
    folder = tempfile.TemporaryDirectory()
    photo, shot = f"{folder.name}/photo.png", f"{folder.name}/page.png"
    Image.fromarray(data.chelsea()[:288, 64:448]).save(photo)  # held out of the demo run
    server = subprocess.Popen([sys.executable, "-m", "pconv_jax.app", "--workdir",
                               args.workdir, "--port", str(args.port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        while "pconv-jax app:" not in (line := server.stdout.readline()):
            if not line and server.poll() is not None:
                sys.exit("the app did not start")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 960})
            page.goto(f"http://127.0.0.1:{args.port}/", wait_until="networkidle")
            page.locator("#editor input[type=file]").set_input_files(photo)
            time.sleep(2)
            box = page.locator("#editor canvas").first.bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx - 60, cy - 25)
            page.mouse.down()
            for i in range(31):
                page.mouse.move(cx - 60 + 4 * i, cy - 25 + i, steps=2)
            page.mouse.up()
            page.click("#inpaint")
            page.wait_for_selector("#result img", timeout=120_000)
            time.sleep(1)
            page.screenshot(path=shot, full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    image = Image.open(shot).convert("RGB")
    folder.cleanup()
    image = image.resize((args.width, round(image.height * args.width / image.width)),
                         Image.LANCZOS)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"wrote {args.out} ({np.prod(image.size)} px)")


if __name__ == "__main__":
    main()
