"""pconv_jax.app under hostile requests: the cases of an outside audit kept as regression tests.

Each test serves the tiny run through the real command line (`cli_server`, conftest.py) and
talks to it over Gradio's HTTP routes as any client could: file routes, server paths named in
a request, decompression bombs (refused from the header, in bounded memory), 16-bit, RGBA,
EXIF, CMYK, animated GIF, zero-byte and oversized uploads, 16 calls at once, and the private
folder that holds everything the server writes.
"""

import http.client
import io
import os
import signal
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the app extra is not installed: pip install -e '.[app]'")

from tests.app_util import (  # noqa: E402
    AppServer,
    PageEvents,
    black_png,
    call_api,
    fetch,
    file_data,
    mask,
    photo,
    upload,
)

SIZE = 256  # the valid image: (SIZE, SIZE) RGB
BOX = (70, 150, 60, 190)  # its hole, (y0, y1, x0, x1)
BOMB = 13300  # the audit's side: 177 M pixels, just under Pillow's own decompression-bomb error
# (and over MAX_PHOTO_PIXELS, 100 M); FULL: a side over MAX_PIXELS (4096^2), refused for 'full'
FULL = 4200
MB = 2**20


def _png_bytes(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def _layer(hole) -> np.ndarray:
    """The editor's painted layer for an (H,W) hole: white, opaque where painted."""
    layer = np.zeros((*hole.shape, 4), np.uint8)
    layer[hole] = 255
    return layer


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """The valid request's files: (folder, image (SIZE,SIZE,3), hole (SIZE,SIZE))."""
    folder = tmp_path_factory.mktemp("valid")
    image = photo(folder / "photo.png", (SIZE, SIZE))
    hole = mask(folder / "mask.png", (SIZE, SIZE), BOX)
    return folder, image, hole


def _api_result(server, kind_data):
    """The result image of a completed API call."""
    kind, data = kind_data
    assert kind == "complete", data
    status, body = fetch(server.url, data[0]["url"])
    assert status == 200
    return np.asarray(Image.open(io.BytesIO(body)))


def _check_valid(result, image, hole):
    """Bit-identical to the image outside the hole, filled inside it."""
    assert result.shape == image.shape
    np.testing.assert_array_equal(result[~hole], image[~hole])
    assert (result[hole] != image[hole]).any(axis=-1).mean() > 0.9


# --- Bombs: refused from the header, within a second, in bounded memory ---------------------


@pytest.mark.parametrize("mode", ["1", "I;16", "RGBA"])
def test_a_header_is_read_without_decoding_the_pixels(tmp_path, mode):
    """The CLI's check_jobs refuses a 13300^2 bomb mask against a 256^2 image, and read_header
    gives its size, each in well under the time decoding takes (Pillow's PNG getexif, which
    the old displayed_size called, decodes the whole image: 1-8 s here)."""
    from pconv_jax.inpaint import InpaintError, check_jobs

    bomb = tmp_path / "bomb.png"
    black_png(bomb, BOMB, BOMB, mode)
    photo(tmp_path / "photo.png", (SIZE, SIZE))
    start = time.perf_counter()
    with pytest.raises(InpaintError, match=f"is {BOMB}x{BOMB} but the image"):
        check_jobs([(str(tmp_path / "photo.png"), str(bomb), str(tmp_path / "out.png"))])
    assert time.perf_counter() - start < 0.2
    from pconv_jax.imagefile import read_header

    start = time.perf_counter()
    header = read_header(str(bomb), "mask")
    assert (header.width, header.height) == (BOMB, BOMB)
    assert time.perf_counter() - start < 0.2


@pytest.mark.slow
def test_bombs_are_refused_from_the_header_in_bounded_memory(cli_server, valid, tmp_path):
    """After a first inference, the audit's bombs one after another: 13300^2 1-bit, RGB, RGBA
    and 16-bit greyscale masks against a valid 256^2 image (API), a 13300^2 photo and a
    13300^2 painted layer through the page's event (sent as the browser sends its canvas, and
    as uploaded files), and a 4200^2 photo (under MAX_PHOTO_PIXELS, over MAX_PIXELS) with
    strategy 'full' (API and page). Each is refused with its one-line message within 1 s; the
    server's peak resident memory over the sequence stays within 500 MB of its idle size after
    the first inference; the valid request after them is bit-identical outside the hole."""
    from pconv_jax.inpaint import MAX_PHOTO_PIXELS, MAX_PIXELS

    assert BOMB * BOMB > MAX_PHOTO_PIXELS and MAX_PIXELS < FULL * FULL <= MAX_PHOTO_PIXELS
    folder, image, hole = valid
    server, page = cli_server, PageEvents(cli_server.url)
    image_path, mask_path = upload(server.url, [folder / "photo.png", folder / "mask.png"])
    first = _api_result(server, call_api(server.url, [file_data(image_path),
                                                      file_data(mask_path)]))
    _check_valid(first, image, hole)
    assert page.inpaint(blobs={"background": _png_bytes(image),
                               "layer0": _png_bytes(_layer(hole))})[0]  # both paths warm

    bombs = {}
    for mode in ("1", "RGB", "RGBA", "I;16"):
        path = tmp_path / f"mask_{mode.replace(';', '')}.png"
        size = black_png(path, BOMB, BOMB, mode)
        assert size < 1 * MB  # the audit's files: 22 KB (1-bit) to 690 KB (RGBA)
        bombs[mode] = path
    big_photo = tmp_path / "big_photo.png"
    black_png(big_photo, BOMB, BOMB, "RGB")
    full_photo = tmp_path / "full_photo.png"  # 17.6 M pixels: too many for 'full' only
    black_png(full_photo, FULL, FULL, "RGB")
    full_mask = tmp_path / "full_mask.png"
    black_png(full_mask, FULL, FULL, "1")
    big_path, full_path, full_mask_path = upload(server.url, [big_photo, full_photo, full_mask])
    mask_paths = dict(zip(bombs, upload(server.url, list(bombs.values())), strict=True))

    time.sleep(1.0)  # the uploads are written; the server idles
    idle = server.memory()["VmRSS"]
    exact_peak = server.reset_peak()  # VmHWM := VmRSS now (Linux clear_refs)
    before = server.memory()["VmHWM"]
    requests = {
        **{f"{mode} mask": (lambda p=p: call_api(server.url, [file_data(image_path),
                                                              file_data(p)]),
                            f"is {BOMB}x{BOMB} but the image is {SIZE}x{SIZE}")
           for mode, p in mask_paths.items()},
        "photo (API)": (lambda: call_api(server.url, [file_data(big_path),
                                                      file_data(mask_path)]),
                        f"the image is {BOMB}x{BOMB} pixels, over the limit"),
        "photo (page, canvas)": (lambda: page.inpaint(blobs={
            "background": big_photo.read_bytes(), "layer0": _png_bytes(_layer(hole))}),
            f"the image is {BOMB}x{BOMB} pixels, over the limit"),
        "photo (page, uploaded)": (lambda: page.inpaint(value={
            "background": file_data(big_path), "layers": [], "composite": None, "id": None}),
            f"the image is {BOMB}x{BOMB} pixels, over the limit"),
        "photo, full (API)": (lambda: call_api(server.url, [
            file_data(full_path), file_data(full_mask_path), "full"]),
            f"strategy full runs the network on the whole {FULL}x{FULL} image"),
        "photo, full (page)": (lambda: page.inpaint(blobs={
            "background": full_photo.read_bytes(), "layer0": _png_bytes(_layer(hole))},
            strategy="full"), f"strategy full runs the network on the whole {FULL}x{FULL}"),
        "layer (page)": (lambda: page.inpaint(blobs={
            "background": _png_bytes(image), "layer0": bombs["RGBA"].read_bytes()}),
            f"a painted layer is {BOMB}x{BOMB} but the image is {SIZE}x{SIZE}"),
    }
    for name, (request, expected) in requests.items():
        start = time.perf_counter()
        ok, reply = request()
        seconds = time.perf_counter() - start
        message = reply["error"] if isinstance(reply, dict) else reply
        assert ok in (False, "error") and expected in message, (name, reply)
        assert seconds < 1.0, f"{name}: refused after {seconds:.2f} s"

    after = _api_result(server, call_api(server.url, [file_data(image_path),
                                                      file_data(mask_path)]))
    np.testing.assert_array_equal(after, first)
    _check_valid(after, image, hole)
    peak = server.memory()["VmHWM"]
    print(f"server: idle {idle / MB:.0f} MB after the first inference, peak {peak / MB:.0f} MB "
          f"over the bombs and the valid request (peak reset: {exact_peak})")
    limit = idle + 500 * MB if exact_peak else max(before, idle + 500 * MB)
    assert peak <= limit, (f"peak {peak / MB:.0f} MB over the idle {idle / MB:.0f} MB + 500 MB "
                           f"(peak reset: {exact_peak})")


# --- Files: what the server serves, what it keeps where, what it leaves behind -------------


def test_file_routes_serve_this_servers_results_only(cli_server, valid):
    """Gradio's file route serves this server's results, and neither a system file, nor a
    path climbing out of its folder, nor another Gradio app's upload in the shared cache
    folder (GRADIO_TEMP_DIR) that holds the server's private folder."""
    folder, _, _ = valid
    server = cli_server
    image_path, mask_path = upload(server.url, [folder / "photo.png", folder / "mask.png"])
    kind, data = call_api(server.url, [file_data(image_path), file_data(mask_path)])
    assert kind == "complete", data
    assert fetch(server.url, data[0]["url"])[0] == 200
    other_app = Path(server.cache) / ("f" * 64)  # as another app's upload would lie
    other_app.mkdir(exist_ok=True)
    (other_app / "their.png").write_bytes(_png_bytes(np.zeros((4, 4), np.uint8)))
    for path in ("/etc/passwd", str(other_app / "their.png"),
                 f"{server.root}/../{other_app.name}/their.png", image_path + "/../../.."):
        status, _ = fetch(server.url, f"gradio_api/file={path}")
        assert status in (403, 404), (path, status)


def _modes(root):
    """{path: permission bits} of everything below root, root included."""
    found = {root: stat.S_IMODE(os.stat(root).st_mode)}
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(parent, name)
            found[path] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


def test_one_private_folder_removed_on_sigterm(run_dir, valid, tmp_path):
    """Uploads, Gradio's cache and the results all lie in one folder below GRADIO_TEMP_DIR:
    the folder is 0700, files 0600, folders 0700 (no other local user reads a result), and
    SIGTERM stops the server (exit 0) and removes it, leaving GRADIO_TEMP_DIR as it was."""
    folder, image, hole = valid
    cache = tmp_path / "cache"
    with AppServer(run_dir, env={"GRADIO_TEMP_DIR": str(cache)}) as server:
        assert Path(server.root).parent == cache
        paths = upload(server.url, [folder / "photo.png", folder / "mask.png"])
        _check_valid(_api_result(server, call_api(server.url, [file_data(p) for p in paths])),
                     image, hole)
        ok, _ = PageEvents(server.url).inpaint(blobs={"background": _png_bytes(image),
                                                      "layer0": _png_bytes(_layer(hole))})
        assert ok
        modes = _modes(server.root)
        assert os.listdir(cache) == [os.path.basename(server.root)]
        assert sum(p.endswith(".png") for p in modes) >= 5  # 2 uploads, 3 results at least
        assert modes[server.root] == 0o700
        readable = {p: oct(m) for p, m in modes.items() if m & 0o077}
        assert not readable, readable
        assert server.stop(signal.SIGTERM) == 0
    assert not os.path.exists(server.root)
    assert os.listdir(cache) == []
    assert not any("Traceback" in line for line in server.log), server.log


# --- Requests naming server files -----------------------------------------------------------


@pytest.mark.parametrize("route", ["api", "page"])
def test_a_server_path_is_one_line_without_the_path(cli_server, route):
    """A FileData naming a server file (not an upload) is refused by Gradio: the client's
    message is one line naming neither that path nor the server's folders, and the log gains
    one line for it, not a traceback."""
    server = cli_server
    target = "/etc/passwd"
    logged = len(server.log)
    if route == "api":
        kind, reply = call_api(server.url, [file_data(target), file_data(target)])
        assert kind == "error"
        message = reply["error"]
    else:
        ok, message = PageEvents(server.url).inpaint(value={
            "background": file_data(target), "layers": [], "composite": None, "id": None})
        assert not ok
    assert "not uploaded" in message, message
    assert "\n" not in message and target not in message and server.root not in message
    assert "/tmp" not in message, message
    deadline = time.time() + 5
    while time.time() < deadline and len(server.log) == logged:
        time.sleep(0.05)
    time.sleep(0.3)  # anything else it would print
    new = server.log[logged:]
    assert len(new) == 1 and "refused" in new[0] and target in new[0], new


# --- Odd but valid formats, and files that are not images -----------------------------------


def _save(path, array, **options):
    Image.fromarray(array).save(path, **options)
    return path


def test_16_bit_rgba_exif_and_cmyk_read_as_the_command_line_reads_them(cli_server, tmp_path):
    """Through the API: a 16-bit RGB PNG (each channel round(v / 257)), an RGBA PNG (alpha
    kept), a JPEG with an EXIF quarter turn (inpainted as displayed) and a CMYK JPEG each
    come back equal to pconv_jax.inpaint.read_image (alpha: the input's) outside the hole."""
    from pconv_jax.inpaint import read_image

    server = cli_server
    rng = np.random.default_rng(0)
    deep = rng.integers(0, 65536, (48, 64, 3), dtype=np.uint16)
    cv2 = pytest.importorskip("cv2")
    cv2.imwrite(str(tmp_path / "deep.png"), deep[..., ::-1])  # BGR, 16 bits per channel
    rgba = rng.integers(0, 256, (48, 64, 4), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # display turned a quarter clockwise: 64 wide, 48 high shows 48x64
    _save(tmp_path / "rgba.png", rgba)
    _save(tmp_path / "turned.jpg", rgba[..., :3], quality=95, exif=exif)
    Image.fromarray(rgba[..., :3]).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    cases = {"deep.png": (48, 64), "rgba.png": (48, 64), "turned.jpg": (64, 48),
             "cmyk.jpg": (48, 64)}  # name: (H, W) as displayed
    for name, shape in cases.items():
        hole = mask(tmp_path / f"mask_{name}.png", shape, (10, 30, 12, 40))
        paths = upload(server.url, [tmp_path / name, tmp_path / f"mask_{name}.png"])
        result = _api_result(server, call_api(server.url, [file_data(p) for p in paths]))
        expected = read_image(str(tmp_path / name))
        if name == "deep.png":  # an independent reference for the 16-bit scaling
            np.testing.assert_array_equal(expected, np.round(deep / 257).astype(np.uint8))
        if name == "rgba.png":
            np.testing.assert_array_equal(result[..., 3], rgba[..., 3])
            result = result[..., :3]
        assert result.shape[:2] == shape, name
        np.testing.assert_array_equal(result[~hole], expected[~hole], err_msg=name)


@pytest.mark.parametrize("case, expected", [
    ("zero-byte", "cannot read image empty.png"),
    ("animated GIF", "holds more than one frame"),
    ("float TIFF", "pixels of mode F"),
    ("mask of the stored size", "mask mask.png is 64x48 but the image is 48x64"),
])
def test_files_the_server_cannot_take_are_one_line(cli_server, tmp_path, case, expected):
    """Files that are not a still image it reads are refused from the header in one line
    naming the upload by its name alone (no server folder), on the API and the page."""
    server = cli_server
    hole = mask(tmp_path / "mask.png", (48, 64), (5, 20, 5, 20))
    if case == "zero-byte":
        image = tmp_path / "empty.png"
        image.write_bytes(b"")
    elif case == "animated GIF":
        image = tmp_path / "frames.gif"
        frames = [Image.fromarray(np.full((48, 64), v, np.uint8)) for v in (0, 128, 255)]
        frames[0].save(image, save_all=True, append_images=frames[1:], duration=100)
    elif case == "float TIFF":
        image = tmp_path / "float.tif"
        Image.fromarray(np.zeros((48, 64), np.float32)).save(image)
    else:  # a phone photo stored 64x48, displayed 48x64 (EXIF): the mask has its stored size
        exif = Image.Exif()
        exif[0x0112] = 6
        image = _save(tmp_path / "turned.jpg", np.zeros((48, 64, 3), np.uint8), exif=exif)
    paths = upload(server.url, [image, tmp_path / "mask.png"])
    kind, reply = call_api(server.url, [file_data(p) for p in paths])
    assert kind == "error" and expected in reply["error"], reply
    messages = [reply["error"]]
    if case != "mask of the stored size":
        layer = _png_bytes(_layer(hole))
        ok, message = PageEvents(server.url).inpaint(
            blobs={"background": image.read_bytes(), "layer0": layer})
        assert not ok and expected.replace("empty.png", "background.png") in message, message
        messages.append(message)
    for message in messages:
        assert "\n" not in message and server.root not in message, message
        assert "Traceback" not in message


@pytest.mark.slow
def test_an_upload_over_the_cap_is_refused_and_leaves_nothing(cli_server):
    """A 300 MB upload (streamed zeros, nothing on disk here) is refused by the 256 MB cap
    with HTTP 413, and leaves no partial file in the server's folder."""
    server = cli_server
    before = set(_modes(server.root))
    boundary = "pconvjaxbig"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            "filename=\"big.png\"\r\nContent-Type: image/png\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = 300 * MB

    def body():
        yield head
        chunk = bytes(MB)
        for _ in range(size // MB):
            yield chunk
        yield tail

    host, port = server.url.split("//")[1].strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.request("POST", "/gradio_api/upload", body=body(), headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail))})
        reply = conn.getresponse()
        status, text = reply.status, reply.read().decode()
    except (BrokenPipeError, ConnectionResetError):
        status, text = 413, "the server closed the connection"  # refused mid-upload
    finally:
        conn.close()
    assert status == 413, (status, text)
    time.sleep(0.5)
    assert set(_modes(server.root)) - before == set()


# --- Many users at once ---------------------------------------------------------------------


@pytest.mark.slow
def test_sixteen_concurrent_calls_are_each_exact(cli_server, valid):
    """16 clients call the API at once (the queue serves them one by one): every result is
    bit-identical to the image outside the hole, and all 16 are the same image."""
    folder, image, hole = valid
    server = cli_server
    paths = upload(server.url, [folder / "photo.png", folder / "mask.png"])
    results, errors = [None] * 16, []

    def call(i):
        try:
            results[i] = _api_result(server, call_api(server.url,
                                                      [file_data(p) for p in paths]))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(repr(err))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for result in results:
        _check_valid(result, image, hole)
        np.testing.assert_array_equal(result, results[0])


# --- Canvases sent ahead of an event that never comes ---------------------------------------


def test_pending_canvases_are_bounded_oldest_first():
    """The editor's store of canvases sent ahead of their event keeps at most max_entries
    sends and max_bytes of them, dropping the oldest; the newest is always kept."""
    from types import SimpleNamespace

    from pconv_jax.app import PendingBlobs

    def sent(n):
        return SimpleNamespace(background=bytes(n), composite=None, layers=[bytes(n), None])

    store = PendingBlobs(max_entries=3, max_bytes=100)
    for i in range(5):
        store[f"id{i}"] = sent(10)
    assert list(store) == ["id2", "id3", "id4"]
    store["id5"] = sent(40)  # 80 bytes: 140 in all, so id2 and id3 go
    assert list(store) == ["id4", "id5"] and store.nbytes() == 100
    store["id6"] = sent(60)  # alone over the limit: kept, as the newest
    assert list(store) == ["id6"]


@pytest.mark.slow
def test_canvases_sent_without_their_event_do_not_grow_memory(cli_server):
    """A client sending 24 canvases of 40 MB to the editor and never asking for them (960 MB)
    leaves the server's resident memory within 512 MB (the store's cap) + 200 MB of where it
    was."""
    server, page = cli_server, PageEvents(cli_server.url)
    blob = np.random.default_rng(0).integers(0, 256, 40 * MB, np.uint8).tobytes()
    before = server.memory()["VmRSS"]
    for _ in range(24):
        page.send_blobs("someone", {"background": blob})
    time.sleep(0.5)
    grown = server.memory()["VmRSS"] - before
    assert grown <= 712 * MB, f"resident memory grew by {grown / MB:.0f} MB"
