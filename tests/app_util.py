"""Helpers for the app's tests: test images, the app's HTTP routes, a served CLI, bomb PNGs."""

import io
import json
import os
import secrets
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "GRADIO_ANALYTICS_ENABLED": "False"}


def free_port() -> int:
    """A TCP port nobody listens on."""
    import portpicker

    return portpicker.pick_unused_port()


def photo(path, size=(200, 240)):
    """A crop of scikit-image's astronaut written as PNG; the (H,W,3) uint8 array."""
    from skimage import data

    h, w = size
    image = np.ascontiguousarray(data.astronaut()[:h, 100:100 + w])
    Image.fromarray(image).save(path)
    return image


def mask(path, shape, box):
    """A white-on-black hole mask PNG with the hole `box` = (y0, y1, x0, x1)."""
    hole = np.zeros(shape, np.uint8)
    y0, y1, x0, x1 = box
    hole[y0:y1, x0:x1] = 255
    Image.fromarray(hole).save(path)
    return hole > 0


# --- Gradio's HTTP routes ---------------------------------------------------------------------


def http_json(url, payload=None, timeout=60):
    """GET (payload None) or POST JSON; the decoded reply."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def _multipart(fields, files):
    """(body, content type) of a multipart form: `fields` {name: str}, `files` [(name, file
    name, bytes)]."""
    boundary = "pconvjax" + secrets.token_hex(8)
    body = io.BytesIO()
    for name, value in fields.items():
        body.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                   f"{value}\r\n".encode())
    for name, filename, data in files:
        body.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                   f"filename=\"{filename}\"\r\nContent-Type: image/png\r\n\r\n".encode())
        body.write(data)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


def upload(base, paths):
    """POST files to Gradio's upload route (multipart): their server paths."""
    body, kind = _multipart({}, [("files", Path(p).name, Path(p).read_bytes()) for p in paths])
    request = urllib.request.Request(base + "gradio_api/upload", data=body,
                                     headers={"Content-Type": kind})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


def file_data(path):
    """The FileData JSON naming a server path."""
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def call_api(base, files, timeout=120):
    """Calls the `inpaint` endpoint over plain HTTP with FileData dicts (and optionally the
    strategy, third): ('complete', data) or ('error', message)."""
    event = http_json(base + "gradio_api/call/inpaint", {"data": files})["event_id"]
    with urllib.request.urlopen(base + f"gradio_api/call/inpaint/{event}",
                                timeout=timeout) as reply:
        stream = reply.read().decode()
    kind = stream.split("event:", 1)[1].split()[0]
    data = stream.split("data:", 1)[1].strip().splitlines()[0]
    return kind, json.loads(data)


def fetch(base, url_or_path):
    """GET a URL (or a path below base): (status, body)."""
    url = url_or_path if url_or_path.startswith("http") else base + url_or_path
    try:
        with urllib.request.urlopen(url, timeout=60) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class PageEvents:
    """The page's Inpaint event as the browser sends it: the canvas as blobs to the editor's
    `accept_blobs`, then the event naming them, its result read from the queue's stream."""

    def __init__(self, base):
        self.base = base
        config = http_json(base + "config")
        ids = {c.get("props", {}).get("elem_id"): c["id"] for c in config["components"]}
        self.editor, button = ids["editor"], ids["inpaint"]
        self.fn_index = next(i for i, d in enumerate(config["dependencies"])
                             if [button, "click"] in [list(t) for t in d["targets"]])

    def send_blobs(self, session, blobs):
        """Sends {'background': bytes, 'layer': bytes} as the browser does: the value's id."""
        editor_id = secrets.token_hex(6)
        for kind, data in blobs.items():
            fields = {"session_hash": session, "component_id": self.editor,
                      "fn_name": "accept_blobs", "id": editor_id,
                      "type": "layer" if kind.startswith("layer") else kind,
                      "index": kind[5:] or "0" if kind.startswith("layer") else "null"}
            body, content_type = _multipart(fields, [("file", f"{kind}.png", data)])
            request = urllib.request.Request(self.base + "gradio_api/component_server",
                                             data=body, headers={"Content-Type": content_type})
            urllib.request.urlopen(request, timeout=60).read()
        return {"id": editor_id, "background": None, "layers": [], "composite": None}

    def inpaint(self, value=None, blobs=None, timeout=120, strategy=None):
        """Runs the Inpaint event on an editor value (or on blobs sent first) and `strategy`
        (None: not sent, the page's default): (success, output list or error message)."""
        session = secrets.token_hex(8)
        if blobs is not None:
            value = self.send_blobs(session, blobs)
        data = [value] if strategy is None else [value, strategy]
        http_json(self.base + "gradio_api/queue/join",
                  {"data": data, "fn_index": self.fn_index, "session_hash": session,
                   "event_data": None, "trigger_id": None})
        url = self.base + f"gradio_api/queue/data?session_hash={session}"
        with urllib.request.urlopen(url, timeout=timeout) as stream:
            for line in stream:
                if not line.startswith(b"data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    if message.get("success"):
                        return True, output.get("data")
                    return False, output.get("error")
        raise AssertionError("the event stream ended without a result")


# --- The app's command line, served --------------------------------------------------------


class AppServer:
    """`python -m pconv_jax.app` on a run and a free port, its output kept in `log` (lines).

    Use as a context manager; it is stopped with SIGTERM (killed if that takes over 30 s)."""

    def __init__(self, run_dir, env=None, start_timeout=180):
        self.port = free_port()
        self.cache = (env or {}).get("GRADIO_TEMP_DIR")  # where Gradio was told to keep files
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pconv_jax.app", "--workdir", str(run_dir), "--port",
             str(self.port)], env={**ENV, **(env or {})}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self.log: list[str] = []
        self.url = None
        deadline = time.time() + start_timeout
        while time.time() < deadline and self.url is None:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                break
            self.log.append(line.rstrip("\n"))
            if line.startswith("pconv-jax app: http://"):
                self.url = line.split()[2]
        if self.url is None:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("the app did not start: " + "\n".join(self.log[-30:]))
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    @property
    def root(self) -> str | None:
        """The folder the server said it keeps its files in (None if it said none)."""
        for _ in range(40):  # the line right after the address
            for line in self.log:
                if line.startswith("pconv-jax app: uploads and results in "):
                    return line.split()[6]
            time.sleep(0.05)
        return None

    def _read(self):
        for line in self.proc.stdout:
            self.log.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.proc.pid

    def memory(self) -> dict[str, int]:
        """{'VmRSS', 'VmHWM'}: the server's resident and peak resident memory, in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}

    def reset_peak(self) -> bool:
        """Resets VmHWM to the current resident size (Linux clear_refs); False if refused."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return False
        return True

    def stop(self, how=signal.SIGTERM) -> int:
        """Sends `how`, waits up to 30 s (then kills); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(how)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(timeout=5)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# --- Decompression bombs, written cheaply ----------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


PNG_COLOURS = {"1": (1, 0), "L": (8, 0), "I;16": (16, 0), "RGB": (8, 2), "RGBA": (8, 6)}


def black_png(path, width, height, mode="L", rows_per_block=100):
    """Writes a black `mode` PNG of width x height (a valid file a decoder expands in full)
    without holding its pixels: one block of rows is deflated once (a full flush makes its
    bytes independent of what comes before) and repeated. Returns the file's size."""
    depth, colour = PNG_COLOURS[mode]
    channels = {0: 1, 2: 3, 6: 4}[colour]
    row = bytes(1 + (width * channels * depth + 7) // 8)  # filter byte 0, then black samples
    assert height % rows_per_block == 0
    block_rows = row * rows_per_block
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: no header, no checksum
    block = deflate.compress(block_rows) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush(zlib.Z_FINISH)  # the final (empty) block
    adler = 1
    for _ in range(height // rows_per_block):
        adler = zlib.adler32(block_rows, adler)
    stream = b"\x78\xda" + block * (height // rows_per_block) + end + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", stream)
            + _chunk(b"IEND", b""))
    Path(path).write_bytes(data)
    return len(data)
