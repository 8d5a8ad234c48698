"""`python -m pconv_jax.app`: a local page to paint a hole on a photo and inpaint it.

    python -m pconv_jax.app --workdir RUN [--step N] [--host 127.0.0.1] [--port 7860]

Upload or paste a photo, brush over what should go (brush size, eraser, undo and clear are in
the editor's toolbar), press Inpaint: the model's result appears beside OpenCV's Telea fill,
ready to download as a lossless PNG or to use as the next input. Every pixel outside the
painted hole comes back bit-identical. One job runs at a time; others wait in Gradio's queue.

The same server answers an HTTP API with one endpoint, `inpaint`: an image file and a mask file
(white = hole, as in `python -m pconv_jax.inpaint`) in, the result as a PNG file out. The
README shows a `gradio_client` call and the plain HTTP route. Gradio is an optional extra:
`pip install -e '.[app]'`.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import numpy as np

from pconv_jax.inpaint import MAX_PIXELS, Inpainter, InpaintError

if TYPE_CHECKING:
    import gradio as gr

HOLE_HINT = "paint over what should go with the brush (white = hole)"


class PageError(ValueError):
    """A request the page cannot serve; the message is shown to the user as it is."""


# "Use result as input", in the browser: the result PNG is handed to the editor's file input.
USE_RESULT_JS = """
async (result) => {
  const url = result && (result.url || result.path);
  const input = document.querySelector("#editor input[type=file]");
  if (url && input) {
    const blob = await (await fetch(url)).blob();
    const files = new DataTransfer();
    files.items.add(new File([blob], "inpainted.png", {type: "image/png"}));
    input.files = files.files;
    input.dispatchEvent(new Event("change", {bubbles: true}));
  }
  return [result];
}
"""


def hole_from_layers(layers: list[np.ndarray] | None, shape: tuple[int, int]) -> np.ndarray:
    """(H,W) bool, True where any editor layer (H,W,4) RGBA uint8 is painted (alpha > 0)."""
    hole = np.zeros(shape, bool)
    for layer in layers or ():
        if layer.shape[:2] != shape:
            raise PageError(f"a painted layer is {layer.shape[1]}x{layer.shape[0]} but the "
                            f"image is {shape[1]}x{shape[0]}: clear the drawing and paint again")
        hole |= (layer[..., 3] if layer.shape[2] == 4 else layer.max(axis=2)) > 0
    return hole


def check_request(image: np.ndarray | None, hole: np.ndarray | None) -> None:
    """Raises PageError naming what is wrong with an (image, hole) request, or nothing."""
    if image is None:
        raise PageError("no image loaded: upload or paste a photo (PNG, JPEG, WebP, ...); a "
                        "file that is not an image does not load")
    h, w = image.shape[:2]
    if h * w > MAX_PIXELS:
        raise PageError(f"the image is {w}x{h} pixels, over the limit of {MAX_PIXELS} pixels "
                        "(the command line's too): downscale or crop it first")
    if hole is None or not hole.any():
        raise PageError(f"no hole painted: {HOLE_HINT}")
    if hole.all():
        raise PageError("the whole image is painted as hole: nothing is left to fill it "
                        "from; erase part of the drawing")


def fill(inpainter: Inpainter, image: np.ndarray, hole: np.ndarray, *,
         telea: bool = True) -> dict:
    """{'model', 'telea': (H,W,3|4) uint8, 'seconds': model time} for an (H,W,3|4) uint8
    image and an (H,W) bool hole; outside the hole both equal the image, a real alpha (not
    all opaque) is copied as the CLI does."""
    from pconv_jax.evaluate import baseline

    check_request(image, hole)
    rgb = np.ascontiguousarray(image[..., :3])
    valid = (~hole).astype(np.float32)  # (H,W) 1 = valid
    start = time.perf_counter()
    try:
        results = {"model": inpainter(rgb, valid)}
    except InpaintError as err:
        raise PageError(str(err)) from None
    seconds = time.perf_counter() - start
    if telea:
        results["telea"] = baseline("telea", rgb, valid)
    if image.shape[2] == 4 and (image[..., 3] < 255).any():
        results = {k: np.dstack([v, image[..., 3]]) for k, v in results.items()}
    return results | {"seconds": seconds}


def model_summary(inpainter: Inpainter) -> str:
    """One line: the run's step and the model's size."""
    import jax
    from flax import nnx

    params = sum(x.size for x in jax.tree.leaves(nnx.state(inpainter.model, nnx.Param)))
    config = inpainter.model.config
    return (f"checkpoint step {inpainter.step} · {params / 1e6:.2f} M parameters · depth "
            f"{config.depth} · trained at {config.image_size} px")


def api_inpaint(inpainter: Inpainter, image_path: str, mask_path: str, out_dir: str) -> str:
    """The API endpoint: image file and mask file (white = hole) -> path of the result PNG."""
    from pconv_jax.inpaint import displayed_size, load_pair, with_alpha, write_image
    from pconv_jax.masks import read_alpha

    if not image_path or not mask_path:
        raise PageError("the inpaint endpoint takes two files: an image and a mask")
    try:
        w, h = displayed_size(image_path, "image")  # the header only: no decoding past limits
        if w * h > MAX_PIXELS:
            raise PageError(f"the image is {w}x{h} pixels, over the limit of {MAX_PIXELS} "
                            "pixels (the command line's too): downscale or crop it first")
        image, valid = load_pair(image_path, mask_path)
        alpha = read_alpha(image_path)
    except (InpaintError, ValueError, OSError) as err:
        raise PageError(_for_api(_without_upload_dir(str(err)))) from None
    hole = valid == 0
    if not hole.any():
        raise PageError("the mask marks no hole: white (or any value above 50% grey) marks "
                        "the pixels to fill")
    out = os.path.join(tempfile.mkdtemp(dir=out_dir), "inpainted.png")
    write_image(out, with_alpha(fill(inpainter, image, hole, telea=False)["model"], alpha, out))
    return out


# The command line's advice, said as it applies to the API (which has no such flags).
API_HINTS = {
    "; pass --resize-mask to resize it (nearest neighbour)": ": send a mask of the image's size",
    " (use --invert-mask if white marks valid pixels)": " (white marks the hole, black what is "
                                                        "kept)",
}


def _for_api(message: str) -> str:
    """An inpaint error with the command line's flag advice replaced by the API's."""
    for cli, api in API_HINTS.items():
        message = message.replace(cli, api)
    return message


def _without_upload_dir(message: str) -> str:
    """A message with Gradio's temporary upload folders cut from file paths."""
    import re

    return re.sub(r"(/[^\s:'\"]*)?/(gradio|tmp[^/\s]*)/[0-9a-f]{16,}/", "", message)


def build(inpainter: Inpainter, *, out_dir: str | None = None,
          title: str = "pconv-jax inpainting") -> gr.Blocks:
    """The Gradio page and its API for `inpainter`; launch it with `.launch()`. Results are
    written below `out_dir` (a new temporary folder if None; the caller removes it)."""
    import gradio as gr

    out_dir = out_dir or tempfile.mkdtemp(prefix="pconv_app_")

    def save(image: np.ndarray, name: str) -> str:
        from pconv_jax.inpaint import write_image

        _prune(out_dir)
        path = os.path.join(tempfile.mkdtemp(dir=out_dir), name)
        write_image(path, image)
        return path

    sizes_seen: set[tuple[int, int]] = set()  # the model compiles once per image size

    def on_inpaint(editor: dict | None):
        try:
            image = None if editor is None else editor.get("background")
            if image is not None and image.ndim == 2:
                image = np.stack([image] * 3, axis=-1)
            hole = None if image is None else hole_from_layers(editor.get("layers"),
                                                               image.shape[:2])
            result = fill(inpainter, image, hole)
        except PageError as err:
            raise gr.Error(str(err), print_exception=False) from None
        h, w = image.shape[:2]
        compiled = "" if (h, w) in sizes_seen else ", including compiling for this size"
        sizes_seen.add((h, w))
        status = (f"Inpainted {w}×{h} px, {100 * hole.mean():.1f}% hole, in "
                  f"{result['seconds']:.2f} s (model{compiled})")
        return (save(result["model"], "inpainted.png"), save(result["telea"], "telea.png"),
                status)

    def on_use_result(result: str | None) -> None:
        if not result:
            raise gr.Error("no result yet: inpaint first", print_exception=False)

    def on_api(image_file: str | None, mask_file: str | None) -> str:
        try:
            _prune(out_dir)
            return api_inpaint(inpainter, image_file, mask_file, out_dir)
        except PageError as err:
            raise gr.Error(str(err), print_exception=False) from None

    # Gradio's cache of uploads and results: files older than an hour go, checked every 10 min
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(600, 3600)) as page:
        gr.Markdown(f"## {title}\n{model_summary(inpainter)}", elem_id="model-info")
        with gr.Row(equal_height=False):
            with gr.Column():  # the input, and what to do with it
                editor = gr.ImageEditor(
                    label="Photo: paint the hole", type="numpy", image_mode="RGBA",
                    sources=("upload", "clipboard"), transforms=(), layers=False,
                    brush=gr.Brush(default_size="auto", colors=["#ffffff"],
                                   color_mode="fixed"),
                    eraser=gr.Eraser(default_size="auto"), format="png", elem_id="editor")
                with gr.Row():
                    run = gr.Button("Inpaint", variant="primary", elem_id="inpaint")
                    use = gr.Button("Use result as input", elem_id="use-result")
                status = gr.Markdown("Upload a photo and paint what should go.",
                                     elem_id="status")
            with gr.Column():  # beside it: the result, and the classical fill below it
                result = gr.Image(label="Partial convolutions (PNG)", type="filepath",
                                  format="png", interactive=False,
                                  buttons=["download", "fullscreen"], elem_id="result")
                telea = gr.Image(label="Telea (OpenCV), for comparison", type="filepath",
                                 format="png", interactive=False, buttons=["download"],
                                 elem_id="telea")
        # page and API share one slot (concurrency_id): one job at a time, the rest queue
        run.click(on_inpaint, editor, [result, telea, status], api_visibility="private",
                  concurrency_id="model")
        # The result goes into the editor as a user's upload would (Gradio 6's editor hangs
        # when an event sets its value); the server only checks that there is a result.
        use.click(on_use_result, result, None, js=USE_RESULT_JS, api_visibility="private",
                  queue=False)
        with gr.Row(visible=False):  # the API's own inputs and output, not shown on the page
            api_image = gr.File(label="image", type="filepath")
            api_mask = gr.File(label="mask (white = hole)", type="filepath")
            api_out = gr.File(label="result (PNG)")
        api_button = gr.Button(visible=False)
        api_button.click(on_api, [api_image, api_mask], api_out, api_name="inpaint",
                         concurrency_id="model")
    page.queue(default_concurrency_limit=1)  # one job at a time: the model holds the device
    return page


def _prune(folder: str, max_age_s: float = 600.0) -> None:
    """Removes the per-request folders below `folder` older than max_age_s (Gradio has long
    copied their files into its own cache by then)."""
    import shutil

    now = time.time()
    for entry in os.scandir(folder):
        if entry.is_dir() and now - entry.stat().st_mtime > max_age_s:
            shutil.rmtree(entry.path, ignore_errors=True)


def theme() -> gr.themes.Base:
    """Gradio's default theme with system fonts: nothing fetched from font servers."""
    import gradio as gr

    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m pconv_jax.app",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="training run folder")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (newest)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be in 1..65535, got {args.port}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("error: the app needs Gradio: pip install -e '.[app]'", file=sys.stderr)
        return 1
    from pconv_jax.checkpoint import CheckpointError
    from pconv_jax.inpaint import load_inpainter

    try:
        check_listen(args.host, args.port)  # before the model loads (seconds)
        inpainter = load_inpainter(args.workdir, args.step)
    except (OSError, ValueError, InpaintError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="pconv_app_") as out_dir:
        page = build(inpainter, out_dir=out_dir)
        try:
            page.launch(server_name=args.host, server_port=args.port, theme=theme(),
                        prevent_thread_lock=True, quiet=True, show_error=True,
                        max_file_size=MAX_UPLOAD)
        except OSError as err:
            print(f"error: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
            return 1
        print(f"pconv-jax app: {browse_url(args.host, args.port)} (run {args.workdir}, step "
              f"{inpainter.step}; listening on {args.host}); API: endpoint 'inpaint'; "
              "Ctrl+C stops it", flush=True)
        try:
            page.block_thread()
        except KeyboardInterrupt:
            pass
        finally:
            page.close()
    return 0


# An upload cap well above the largest image the model takes (4096x4096, 16-bit RGBA PNG).
MAX_UPLOAD = "256mb"


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


if __name__ == "__main__":
    sys.exit(main())
