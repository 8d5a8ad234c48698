"""The page's server process, without Gradio: its private folder and where it listens.

`python -m pconv_jax.app` runs inside `private_folder()`, checks `check_listen` before the
model loads, and prints `browse_url`. Kept apart from app.py, which builds the page.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator

# Where Gradio keeps uploads and its cache of results, and cached examples (the app has none;
# Gradio would otherwise serve a .gradio/cached_examples in the current folder).
GRADIO_FOLDERS = ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE")


@contextlib.contextmanager
def private_folder() -> Iterator[str]:
    """A new folder (0700) below GRADIO_TEMP_DIR (else the system's temporary folder) that
    holds everything the server writes: Gradio's uploads and cache, and the results. Files
    are made 0600 and folders 0700 (umask 077), so other local users read none of it, and the
    folder is removed when the block ends, however it ends."""
    import shutil

    umask = os.umask(0o077)
    saved = {key: os.environ.get(key) for key in GRADIO_FOLDERS}
    parent = os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()
    os.makedirs(parent, exist_ok=True)
    root = tempfile.mkdtemp(prefix="pconv_app_", dir=parent)
    try:
        os.environ["GRADIO_TEMP_DIR"] = root
        os.environ["GRADIO_EXAMPLES_CACHE"] = os.path.join(root, "examples")
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.umask(umask)


def check_listen(host: str, port: int) -> None:
    """Raises OSError naming --host or --port when the server could not listen there."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise OSError(f"--host {host!r} is not an address of this machine ({err}); "
                      "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            what = (f"--port {port} is in use" if err.errno == errno.EADDRINUSE
                    else f"cannot listen on --host {host} --port {port} ({err.strerror})")
            raise OSError(f"{what}; choose another --port or --host") from None


def browse_url(host: str, port: int) -> str:
    """The address to open in a browser: every-interface hosts as 127.0.0.1, IPv6 bracketed."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
