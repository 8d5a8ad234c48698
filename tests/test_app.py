"""pconv_jax.app: the page in headless Chromium, the HTTP API, the queue, bad input as a message.

The browser test drives Debian's chromium through Playwright: upload a photo, paint across it,
inpaint, download the PNG, and check in NumPy that only the painted neighbourhood changed.
"""

import io
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the app extra is not installed: pip install -e '.[app]'")

from pconv_jax import app  # noqa: E402
from pconv_jax.inpaint import MAX_PHOTO_PIXELS, MAX_PIXELS  # noqa: E402
from tests.app_util import (  # noqa: E402
    ENV,
    black_png,
    call_api,
    file_data,
    free_port,
    http_json,
    mask,
    upload,
)
from tests.app_util import photo as write_photo  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# As the machine notes say: without the background-networking flags, Chromium keeps trying
# hosts this closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


# --- The page's logic, without a server ----------------------------------------------------


def test_hole_is_where_any_layer_is_painted():
    """Every pixel with alpha > 0 in any layer is hole, whatever its colour; others are not."""
    rng = np.random.default_rng(0)
    layers = [np.zeros((6, 7, 4), np.uint8) for _ in range(2)]
    layers[0][1, 2] = (255, 255, 255, 255)
    layers[1][4, 5] = (10, 0, 0, 1)  # faint anti-aliased edge: still painted
    layers[1][0, 0, :3] = rng.integers(0, 256, 3)  # colour under alpha 0: not painted
    expected = np.zeros((6, 7), bool)
    expected[1, 2] = expected[4, 5] = True
    np.testing.assert_array_equal(app.hole_from_layers(layers, (6, 7)), expected)
    with pytest.raises(app.PageError, match="paint again"):
        app.hole_from_layers([np.zeros((5, 7, 4), np.uint8)], (6, 7))


@pytest.mark.parametrize("case, expected", [
    ("no image", "no image"),
    ("no hole", "no hole painted"),
    ("all hole", "whole image is painted"),
    ("too large", f"the image is 10001x10000 pixels, over the limit of {MAX_PHOTO_PIXELS} "
                  "pixels"),
    ("too large for full", f"over its limit of {MAX_PIXELS} pixels: choose auto, crop or "
                           "resize"),
    ("unknown strategy", "unknown strategy 'tile': choose auto, full, crop or resize"),
])
def test_bad_page_requests_are_messages(case, expected):
    """Each bad request is a PageError whose one-line message names the problem (shown in
    the page): a photo over MAX_PHOTO_PIXELS under any strategy, one over MAX_PIXELS under
    'full' (naming the strategies that take it), a strategy that is not one."""
    image = np.zeros((8, 8, 4), np.uint8)
    hole = np.zeros((8, 8), bool)
    strategy = "auto"
    if case == "no image":
        image = None
    elif case == "all hole":
        hole[:] = True
    elif case.startswith("too large"):  # views: no allocation of their size for the check
        h, w = (10000, 10001) if case == "too large" else (4097, 4096)
        image = np.broadcast_to(np.uint8(0), (h, w, 4))
        hole = np.broadcast_to(True, (h, w))
        strategy = "full" if case == "too large for full" else "auto"
    elif case == "unknown strategy":
        hole[2, 2] = True
        strategy = "tile"
    with pytest.raises(app.PageError, match=re.escape(expected)) as info:
        app.check_request(image, hole, strategy)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("strategy", ["auto", "crop", "resize"])
def test_photos_over_the_networks_limit_pass_the_checks(strategy):
    """A photo over MAX_PIXELS (the old limit), up to MAX_PHOTO_PIXELS, passes the page's
    checks under every strategy but 'full', and the default strategy is 'auto'."""
    hole = np.zeros((10000, 10000), bool)
    hole[5, 5] = True
    image = np.broadcast_to(np.uint8(0), (10000, 10000, 4))  # a view: nothing allocated
    assert 10000 * 10000 <= MAX_PHOTO_PIXELS
    app.check_request(image, hole, strategy)
    app.check_size("image", 10000, 10000, strategy)
    assert app.check_strategy(None) == "auto"
    with pytest.raises(app.PageError, match="choose auto, crop or resize"):
        app.check_request(image, hole, "full")


def test_fill_keeps_valid_pixels_and_alpha(inpainter):
    """Outside the hole the model's and Telea's results equal the input bit for bit; a
    translucent input keeps its alpha; the hole is filled (differs from a zeroed input)."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (24, 20, 4), np.uint8)
    hole = np.zeros((24, 20), bool)
    hole[5:15, 4:12] = True
    out = app.fill(inpainter, image, hole)
    for name in ("model", "telea"):
        assert out[name].shape == image.shape
        np.testing.assert_array_equal(out[name][~hole], image[~hole])
    assert out["seconds"] > 0
    assert out["plan"].strategy == "full"  # auto, on an image within twice the training size
    opaque = image.copy()
    opaque[..., 3] = 255
    assert app.fill(inpainter, opaque, hole)["model"].shape == (24, 20, 3)


def _two_holes(shape):
    """(H,W) bool: two small holes far apart, each taking a crop of its own."""
    hole = np.zeros(shape, bool)
    hole[20:32, 30:40] = True
    hole[150:160, 180:194] = True
    return hole


def test_page_handler_names_the_strategy_that_ran(inpainter, tmp_path):
    """The Inpaint button's handler, called as Gradio calls it: without a strategy it runs
    'auto' and its status line says what auto chose; with 'crop' on a photo over twice the
    training size it runs crop (the result is Inpainter.fill_photo's crop result, valid pixels
    bit-identical) and says 'strategy crop (2 crops)'; 'full' says full; an unknown strategy
    is a one-line message naming the choices."""
    import gradio as gr

    from pconv_jax.strategies import FULL_FACTOR

    assert 200 > FULL_FACTOR * inpainter.train_size  # the photo is 'large' here
    image = write_photo(tmp_path / "photo.png")  # (200, 240, 3)
    hole = _two_holes(image.shape[:2])
    layer = np.zeros((*hole.shape, 4), np.uint8)
    layer[hole] = 255
    Image.fromarray(layer).save(tmp_path / "layer.png")
    value = {"background": {"path": str(tmp_path / "photo.png")},
             "layers": [{"path": str(tmp_path / "layer.png")}], "composite": None, "id": None}
    handler = app._on_inpaint(inpainter, str(tmp_path / "out"), SimpleNamespace(blob_storage={}))
    (tmp_path / "out").mkdir()
    valid = (~hole).astype(np.float32)

    _, _, status = handler(value)  # the page's default
    auto = inpainter.fill_photo(image, valid)[1].describe()
    assert f"strategy auto → {auto}, in " in status, status

    result_path, telea_path, status = handler(value, "crop")
    assert re.fullmatch(r"Inpainted 240×200 px, [\d.]+% hole, strategy crop \(2 crops\), in "
                        r"[\d.]+ s \(model(, including compiling for this size)?\)", status), \
        status
    result = np.asarray(Image.open(result_path))
    np.testing.assert_array_equal(result[~hole], image[~hole])
    np.testing.assert_array_equal(result, inpainter.fill_photo(image, valid, strategy="crop")[0])
    assert Image.open(result_path).text["strategy"] == "crop (2 crops)"
    assert "strategy full, in " in handler(value, "full")[2]
    with pytest.raises(gr.Error, match=re.escape("unknown strategy 'tile': choose auto, full, "
                                                 "crop or resize")):
        handler(value, "tile")


def test_page_offers_the_strategies_with_auto_first(inpainter, tmp_path):
    """The page has a strategy control (elem_id 'strategy') offering auto, full, crop and
    resize, set to auto, and the Inpaint event sends it after the editor."""
    page = app.build(inpainter, out_dir=str(tmp_path))
    config = page.get_config_file()
    by_elem = {c["props"].get("elem_id"): c for c in config["components"]}
    control = by_elem["strategy"]
    assert control["props"]["value"] == "auto"
    assert [c[1] for c in control["props"]["choices"]] == ["auto", "full", "crop", "resize"]
    button = by_elem["inpaint"]["id"]
    event = next(d for d in config["dependencies"] if [button, "click"] in
                 [list(t) for t in d["targets"]])
    assert event["inputs"] == [by_elem["editor"]["id"], control["id"]]


# --- The HTTP API ----------------------------------------------------------------------------


def test_api_through_gradio_client(served, inpainter, tmp_path):
    """gradio_client's call of the `inpaint` endpoint returns a PNG whose valid pixels are the
    photo's and whose hole holds what the library's Inpainter gives for the same pair."""
    from gradio_client import Client, handle_file

    image = write_photo(tmp_path / "photo.png")
    hole = mask(tmp_path / "mask.png", image.shape[:2], (60, 110, 80, 170))
    client = Client(served, verbose=False)
    result_path = client.predict(handle_file(str(tmp_path / "photo.png")),
                                 handle_file(str(tmp_path / "mask.png")), api_name="/inpaint")
    assert result_path.endswith(".png")
    result = np.asarray(Image.open(result_path))
    np.testing.assert_array_equal(result[~hole], image[~hole])
    np.testing.assert_array_equal(result, inpainter(image, (~hole).astype(np.float32)))
    assert (result[hole] != image[hole]).any(axis=1).mean() > 0.9
    # two inputs: strategy auto (gradio_client fills in the endpoint's default)
    plan = inpainter.fill_photo(image, (~hole).astype(np.float32), strategy="auto")[1]
    assert Image.open(result_path).text["strategy"] == plan.describe()


def test_api_takes_a_strategy(served, inpainter, tmp_path):
    """The `inpaint` endpoint's third input, `strategy` (positional or keyword): 'crop' on a
    photo over twice the training size returns a PNG whose valid pixels are the photo's, equal
    to Inpainter.fill_photo's crop result, its text chunk saying 'crop (2 crops)'; the API
    declares the parameter with default 'auto'; an unknown strategy is the app's one-line
    message naming the choices."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    image = write_photo(tmp_path / "photo.png")  # (200, 240): over 2 x 32 px
    hole = _two_holes(image.shape[:2])
    Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    files = handle_file(str(tmp_path / "photo.png")), handle_file(str(tmp_path / "mask.png"))
    client = Client(served, verbose=False)
    info = client.view_api(print_info=False, return_format="dict")
    strategy, = [p for p in info["named_endpoints"]["/inpaint"]["parameters"]
                 if p["parameter_name"] == "strategy"]
    assert strategy["parameter_has_default"] and strategy["parameter_default"] == "auto"
    valid = (~hole).astype(np.float32)
    expected, plan = inpainter.fill_photo(image, valid, strategy="crop")
    assert plan.describe() == "crop (2 crops)"
    for path in (client.predict(*files, "crop", api_name="/inpaint"),
                 client.predict(*files, strategy="crop", api_name="/inpaint")):
        result = np.asarray(Image.open(path))
        np.testing.assert_array_equal(result[~hole], image[~hole])
        np.testing.assert_array_equal(result, expected)
        assert Image.open(path).text["strategy"] == "crop (2 crops)"
    with pytest.raises(AppError) as err:
        client.predict(*files, "tile", api_name="/inpaint")
    message = str(err.value)
    assert "unknown strategy 'tile': choose auto, full, crop or resize" in message, message
    assert "\n" not in message and "Traceback" not in message, message


def test_api_through_plain_http(served, inpainter, tmp_path):
    """The route the README documents for curl: upload, call, read the event stream, fetch.
    A call sending the two files alone runs strategy auto; one sending "crop" third runs
    crop (the PNG's text chunk names it)."""
    image = write_photo(tmp_path / "photo.png")
    hole = mask(tmp_path / "mask.png", image.shape[:2], (20, 50, 30, 90))
    paths = upload(served, [tmp_path / "photo.png", tmp_path / "mask.png"])
    files = [{"path": p, "meta": {"_type": "gradio.FileData"}} for p in paths]
    event = http_json(served + "gradio_api/call/inpaint", {"data": files})["event_id"]
    with urllib.request.urlopen(served + f"gradio_api/call/inpaint/{event}", timeout=60) as r:
        stream = r.read().decode()
    assert "event: complete" in stream, stream
    data = json.loads(stream.split("data:", 1)[1].strip().splitlines()[0])
    with urllib.request.urlopen(data[0]["url"], timeout=60) as r:
        png = Image.open(io.BytesIO(r.read()))
    result = np.asarray(png)
    np.testing.assert_array_equal(result[~hole], image[~hole])
    assert (result[hole] != image[hole]).any(axis=1).mean() > 0.9
    valid = (~hole).astype(np.float32)
    assert png.text["strategy"] == inpainter.fill_photo(image, valid)[1].describe()
    kind, data = call_api(served, [file_data(p) for p in paths] + ["crop"])
    assert kind == "complete", data
    with urllib.request.urlopen(data[0]["url"], timeout=60) as r:
        png = Image.open(io.BytesIO(r.read()))
    np.testing.assert_array_equal(np.asarray(png)[~hole], image[~hole])
    assert png.text["strategy"].startswith("crop ("), png.text


@pytest.mark.parametrize("case, expected", [
    ("not an image", "cannot read image notes.png"),
    ("no hole", "the mask marks no hole"),
    ("all hole", "marks the whole image as hole"),
    ("mask size", "but the image is 240x200"),
    ("too large", f"the image is 10001x10000 pixels, over the limit of {MAX_PHOTO_PIXELS}"),
    ("too large for full", f"over its limit of {MAX_PIXELS} pixels: choose auto, crop or "
                           "resize"),
    ("crop too large", None),  # the library's message, whatever its words
    ("unknown strategy", "unknown strategy 'Crop': choose auto, full, crop or resize"),
])
def test_api_bad_input_is_a_message(served, inpainter, tmp_path, case, expected):
    """Each bad request fails with the app's one-line message in the client's error, not a
    traceback and not Gradio's generic 'Error': a photo over MAX_PHOTO_PIXELS and one over
    MAX_PIXELS under 'full' are refused from the header (the files are black PNGs of a few
    kB that would decode to 300 MB and 50 MB); a hole wider than the photo is high cannot be
    cropped (Inpainter's message)."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    image = write_photo(tmp_path / "photo.png")
    image_path, mask_path = tmp_path / "photo.png", tmp_path / "mask.png"
    box = {"no hole": (0, 0, 0, 0), "all hole": (0, 200, 0, 240),
           "crop too large": (50, 60, 0, 240)}.get(case, (5, 20, 5, 20))
    hole = mask(mask_path, image.shape[:2], box)
    strategy = {"too large for full": "full", "crop too large": "crop",
                "unknown strategy": "Crop"}.get(case, "auto")
    if case == "not an image":
        image_path = tmp_path / "notes.png"
        image_path.write_text("these are notes, not pixels")
    elif case == "mask size":
        mask(mask_path, (100, 100), (5, 20, 5, 20))
    elif case == "crop too large":
        from pconv_jax.inpaint import InpaintError

        with pytest.raises(InpaintError) as refused:
            inpainter.fill_photo(image, (~hole).astype(np.float32), strategy="crop")
        expected = str(refused.value)
    elif case.startswith("too large"):  # written without holding the pixels
        image_path = tmp_path / "large.png"
        width, height = (10001, 10000) if case == "too large" else (4097, 4100)
        black_png(image_path, width, height, "RGB")
        black_png(mask_path, width, height, "1")
    client = Client(served, verbose=False)
    with pytest.raises(AppError) as info:
        client.predict(handle_file(str(image_path)), handle_file(str(mask_path)), strategy,
                       api_name="/inpaint")
    message = str(info.value)
    assert expected in message and "Traceback" not in message, message
    assert "\n" not in message, message
    assert "/gradio/" not in message  # no server-side temporary paths
    assert "--" not in message, message  # no command-line flags the API does not have


def test_one_job_at_a_time(inpainter, tmp_path):
    """Two clients at once: the second job starts only after the first ends (Gradio's queue),
    page and API sharing one slot."""
    from gradio_client import Client, handle_file

    spans, lock = [], threading.Lock()

    class Slow:
        """The inpainter, taking 0.6 s per call and recording when it ran."""

        model, step = inpainter.model, inpainter.step

        def fill_photo(self, image, valid, **kwargs):
            start = time.perf_counter()
            time.sleep(0.6)
            result = inpainter.fill_photo(image, valid, **kwargs)
            with lock:
                spans.append((start, time.perf_counter()))
            return result

    image = write_photo(tmp_path / "photo.png")
    mask(tmp_path / "mask.png", image.shape[:2], (60, 110, 80, 170))
    page = app.build(Slow())
    port = free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                quiet=True)
    try:
        clients = [Client(f"http://127.0.0.1:{port}/", verbose=False) for _ in range(2)]
        jobs = [c.submit(handle_file(str(tmp_path / "photo.png")),
                         handle_file(str(tmp_path / "mask.png")), api_name="/inpaint")
                for c in clients]
        for job in jobs:
            job.result(timeout=120)
    finally:
        page.close()
    assert len(spans) == 2
    (a0, a1), (b0, b1) = sorted(spans)
    assert b0 >= a1, f"jobs overlapped: {spans}"


@pytest.mark.parametrize("args, expected", [
    (["--host", "no-such-host.invalid"], "--host 'no-such-host.invalid' is not an address"),
    (["--host", "192.0.2.1"], "cannot listen on --host 192.0.2.1"),  # not this machine's
    (["--port", "in-use"], "is in use; choose another --port"),
])
def test_cli_refuses_where_it_cannot_listen_before_loading(tmp_path, args, expected):
    """A host it cannot listen on, or a port in use, is one line naming the flag, said before
    the model loads (the workdir here is not even a run)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args = [str(taken.getsockname()[1]) if a == "in-use" else a for a in args]
        run = subprocess.run([sys.executable, "-m", "pconv_jax.app", "--workdir",
                              str(tmp_path), *args], env=ENV, capture_output=True, text=True,
                             timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [run.stderr.strip()], run.stderr
    assert expected in run.stderr, run.stderr


@pytest.mark.parametrize("host, url", [("127.0.0.1", "http://127.0.0.1:7860/"),
                                       ("0.0.0.0", "http://127.0.0.1:7860/"),
                                       ("::1", "http://[::1]:7860/")])
def test_printed_address_opens_in_a_browser(host, url):
    """Every-interface hosts print a local address; IPv6 ones are bracketed."""
    assert app.browse_url(host, 7860) == url


# --- The page in a real browser --------------------------------------------------------------


def _stroke(page, dy_screen: float):
    """Drags the brush horizontally across the editor's canvas centre, dy_screen px below it.

    Returns (row, col0, col1) of the stroke's centre line in image pixels, from the editor's
    zoom (its toolbar shows it) and the image being centred in the canvas."""
    brush = page.locator("#editor button[aria-label='Brush']")
    if "highlight" not in (brush.get_attribute("class") or ""):  # e.g. after a new background
        brush.click()
    canvas = page.locator("#editor canvas").first
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    zoom = float(re.search(r"(\d+)%", page.locator("#editor").inner_text()).group(1)) / 100
    page.mouse.move(cx - 40, cy + dy_screen)
    page.mouse.down()
    for i in range(21):
        page.mouse.move(cx - 40 + 4 * i, cy + dy_screen, steps=2)
    page.mouse.up()
    return dy_screen / zoom, -40 / zoom, 40 / zoom  # relative to the image centre


# The editor shows an image (its toolbar shows the zoom) and no pending-time counter.
EDITOR_READY = r"""() => { const t = document.querySelector('#editor').innerText;
                           return /\d+%/.test(t) && !/\d+\.\ds/.test(t); }"""


def _wait_for_editor(page):
    """Waits until the editor shows an image and has stayed idle for half a second."""
    page.locator("#editor canvas").first.wait_for()
    for _ in range(2):
        page.wait_for_function(EDITOR_READY, timeout=60_000)
        time.sleep(0.5)


def _download_result(page, path, previous_src=None):
    """Waits for a (new) result image and downloads it through the page's download button."""
    page.wait_for_function(
        "prev => { const img = document.querySelector('#result img');"
        " return img && img.src && img.src !== prev; }", arg=previous_src, timeout=120_000)
    src = page.locator("#result img").get_attribute("src")
    with page.expect_download(timeout=60_000) as download:
        page.locator("#result [download]").first.click()
    download.value.save_as(path)
    return np.asarray(Image.open(path)), src


def _changed_near(changed, stroke, shape, reach):
    """Whether every changed pixel lies within `reach` px of the stroke's centre segment and
    the segment's own pixels all changed."""
    h, w = shape
    row, col0, col1 = stroke
    r, c0, c1 = h / 2 + row, w / 2 + col0, w / 2 + col1
    ys, xs = np.nonzero(changed)
    dx = np.maximum(0, np.maximum(c0 - xs, xs - c1))
    within = np.hypot(ys - r, dx) <= reach
    line = changed[int(round(r)), int(np.ceil(c0)):int(c1)]
    return bool(within.all()), float(line.mean())


class UploadedLayers:
    """The editor layers the page sent, read back from the server's upload cache
    (GRADIO_TEMP_DIR): the painted hole, exactly as the browser drew it, is where a layer
    with transparent pixels is not transparent."""

    def __init__(self, cache: Path):
        self.cache = cache
        self.seen = set(cache.rglob("*"))

    def hole(self, shape) -> np.ndarray:
        """(H,W) bool: the painted pixels of the layers uploaded since the last call."""
        new = set(self.cache.rglob("*")) - self.seen
        self.seen |= new
        layers = []
        for path in new:
            try:
                image = np.asarray(Image.open(path))
            except (OSError, ValueError):
                continue  # not an image
            if image.ndim == 3 and image.shape[2] == 4 and image.shape[:2] == shape \
                    and (image[..., 3] == 0).any():
                layers.append(image[..., 3] > 0)
        assert layers, f"the page uploaded no painted layer: {sorted(map(str, new))}"
        return np.any(layers, axis=0)


def _check_fill(result, before, hole):
    """Outside the painted hole bit-identical to `before`; inside it, filled."""
    assert result.shape == before.shape
    assert 0 < hole.mean() < 0.2
    np.testing.assert_array_equal(result[~hole], before[~hole])
    assert (result[hole] != before[hole]).any(axis=1).mean() > 0.9


@pytest.mark.slow
def test_paint_inpaint_download_in_chromium(cli_server, tmp_path):
    """In headless Chromium: an Inpaint click after a file that is not an image, and one with
    nothing painted, each show their message in the page; a brush stroke + Inpaint gives a
    PNG download that is bit-identical to the photo outside the hole the page painted (read
    from the layer it uploads), filled inside it, and that hole lies along the stroke; 'Use
    result as input' and a second stroke keep the first fill the same way; a JPEG with an
    EXIF quarter turn is inpainted turned, as the CLI reads it. A screenshot of the page is
    saved in test-artifacts/."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed and could not be (make test installs "
                    "it with apt-get as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed "
                                   "(the dev extra has it: pip install -e '.[dev]')")

    photo = write_photo(tmp_path / "photo.png", size=(256, 320))
    reach = 70  # image px: the brush's radius (25 by default) with a wide margin
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1100},
                                    accept_downloads=True)
            url, cache = cli_server.url, Path(cli_server.root)
            page.goto(url, wait_until="networkidle")
            info = page.locator("#model-info").inner_text()  # run_dir keeps a moving average
            assert "checkpoint step 2" in info and "moving-average weights" in info
            (tmp_path / "notes.png").write_text("these are notes, not pixels")
            page.locator("#editor input[type=file]").set_input_files(str(tmp_path / "notes.png"))
            time.sleep(1.0)
            page.click("#inpaint")  # the browser could not decode it: nothing loaded
            page.get_by_text("a file that is not an image does not load").first.wait_for(
                timeout=30_000)
            page.locator("#editor input[type=file]").set_input_files(str(tmp_path / "photo.png"))
            _wait_for_editor(page)
            page.click("#inpaint")
            page.get_by_text("no hole painted").first.wait_for(timeout=30_000)

            uploads = UploadedLayers(cache)
            first = _stroke(page, -60)
            page.click("#inpaint")
            result, src = _download_result(page, tmp_path / "result.png")
            _check_fill(result, photo, uploads.hole(photo.shape[:2]))
            changed = (result != photo).any(axis=2)
            confined, line_changed = _changed_near(changed, first, photo.shape[:2], reach)
            assert confined, "the hole the page sent is not where the brush went"
            assert line_changed > 0.99
            assert re.search(r"Inpainted 320×256 px, [\d.]+% hole, strategy auto → \S+.*, in "
                             r"[\d.]+ s", page.locator("#status").inner_text())
            # the strategy control: auto unless the user picks another
            assert page.locator("#strategy input[value=auto]").is_checked()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "app_page.png"), full_page=True)

            page.click("#use-result")
            time.sleep(1.0)  # the page fetches the result and hands it to the editor
            _wait_for_editor(page)
            second = _stroke(page, 60)
            page.click("#inpaint")
            again, _ = _download_result(page, tmp_path / "again.png", src)
            _check_fill(again, result, uploads.hole(photo.shape[:2]))  # the first fill kept
            changed_again = (again != result).any(axis=2)  # against the first result
            confined, line_changed = _changed_near(changed_again, second, photo.shape[:2],
                                                   reach)
            assert confined and line_changed > 0.99, "the second pass changed pixels away " \
                "from its stroke"
            h, w = photo.shape[:2]  # the first fill is kept: the second pass started from it
            row, col0, col1 = first
            line = np.s_[int(round(h / 2 + row)), int(np.ceil(w / 2 + col0)):int(w / 2 + col1)]
            np.testing.assert_array_equal(again[line], result[line])
            assert (result[line] != photo[line]).any(axis=1).all()

            # a phone photo: a JPEG whose EXIF says 'turn a quarter' is shown and inpainted
            # turned, as the CLI reads it (the browser decodes it; JPEG decoders may differ
            # by a level or two)
            from pconv_jax.inpaint import read_image

            turned = tmp_path / "turned.jpg"
            exif = Image.Exif()
            exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
            Image.fromarray(photo).save(turned, quality=95, exif=exif)
            expected = read_image(str(turned))
            assert expected.shape == (320, 256, 3)
            page.locator("#editor input[type=file]").set_input_files(str(turned))
            _wait_for_editor(page)
            _stroke(page, 0)
            previous = page.locator("#result img").get_attribute("src")
            page.click("#inpaint")
            shown, _ = _download_result(page, tmp_path / "turned_result.png", previous)
            hole = uploads.hole(expected.shape[:2])
            assert shown.shape == expected.shape
            diff = np.abs(shown.astype(int) - expected.astype(int))[~hole]
            assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 8, (diff.mean(), diff.max())
        finally:
            browser.close()
