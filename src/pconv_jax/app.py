"""`python -m pconv_jax.app`: a local page to paint a hole on a photo and inpaint it.

    python -m pconv_jax.app --workdir RUN [--step N] [--host 127.0.0.1] [--port 7860]

Upload or paste a photo, brush over what should go (brush size, eraser, undo and clear are in
the editor's toolbar), press Inpaint: the model's result appears beside OpenCV's Telea fill,
ready to download as a lossless PNG or to use as the next input. Every pixel outside the
painted hole comes back bit-identical. One job runs at a time; others wait in Gradio's queue.
A photo larger than the model's training size is inpainted by a strategy chosen on the page
(pconv_jax.strategies): `auto` (default), `full`, `crop` or `resize`; the status line names the
one that ran. Photos are taken up to MAX_PHOTO_PIXELS; `full` up to MAX_PIXELS.

The same server answers an HTTP API with one endpoint, `inpaint`: an image file, a mask file
(white = hole, as in `python -m pconv_jax.inpaint`) and optionally a strategy (default `auto`;
a client that sends two inputs gets it) in, the result as a PNG file out, whose text chunk
`strategy` names the strategy that ran. The README shows a `gradio_client` call and the plain
HTTP route. Gradio is an optional extra: `pip install -e '.[app]'`.

Every upload is checked from its header (size, mode, frames) before a pixel is decoded, on
both paths; everything the server writes lives in one private folder (0700, files 0600),
removed when it stops, Ctrl+C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pconv_jax.app_server import GRADIO_FOLDERS, browse_url, check_listen, private_folder  # noqa: F401 (API)
from pconv_jax.checkpoint import quiet_orbax_failures
from pconv_jax.imagefile import Header, read_alpha, read_header, read_uint8
from pconv_jax.inpaint import MAX_PHOTO_PIXELS, MAX_PIXELS, Inpainter, InpaintError
from pconv_jax.strategies import STRATEGIES, Plan

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


def check_strategy(strategy: object) -> str:
    """The strategy a request names (None: the default, 'auto'); PageError for another."""
    if strategy is None:
        return "auto"
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise PageError(f"unknown strategy {strategy!r}: choose {', '.join(STRATEGIES[:-1])} "
                        f"or {STRATEGIES[-1]}")
    return strategy


def check_size(what: str, width: int, height: int, strategy: str = "auto") -> None:
    """Raises PageError when an image of width x height is over the photo limit, or over the
    network's limit under strategy 'full' (the other strategies keep its input small)."""
    if width * height > MAX_PHOTO_PIXELS:
        raise PageError(f"the {what} is {width}x{height} pixels, over the limit of "
                        f"{MAX_PHOTO_PIXELS} pixels: downscale or crop it first")
    if strategy == "full" and width * height > MAX_PIXELS:
        raise PageError(f"strategy full runs the network on the whole {width}x{height} {what}, "
                        f"over its limit of {MAX_PIXELS} pixels: choose auto, crop or resize")


def check_request(image: np.ndarray | None, hole: np.ndarray | None,
                  strategy: str = "auto") -> None:
    """Raises PageError naming what is wrong with an (image, hole, strategy) request, or
    nothing."""
    if image is None:
        raise PageError("no image loaded: upload or paste a photo (PNG, JPEG, WebP, ...); a "
                        "file that is not an image does not load")
    strategy = check_strategy(strategy)
    h, w = image.shape[:2]
    check_size("image", w, h, strategy)
    if hole is None or not hole.any():
        raise PageError(f"no hole painted: {HOLE_HINT}")
    if hole.all():
        raise PageError("the whole image is painted as hole: nothing is left to fill it "
                        "from; erase part of the drawing")


def fill(inpainter: Inpainter, image: np.ndarray, hole: np.ndarray, *,
         telea: bool = True, strategy: str = "auto") -> dict:
    """{'model', 'telea': (H,W,3|4) uint8, 'seconds': model time, 'plan': the strategy's
    Plan that ran} for an (H,W,3|4) uint8 image and an (H,W) bool hole, the model run by
    Inpainter.fill_photo with `strategy`; outside the hole both equal the image, a real alpha
    (not all opaque) is copied as the CLI does."""
    from pconv_jax.baselines import fill

    check_request(image, hole, strategy)
    rgb = np.ascontiguousarray(image[..., :3])
    valid = (~hole).astype(np.float32)  # (H,W) 1 = valid
    start = time.perf_counter()
    try:
        model, plan = inpainter.fill_photo(rgb, valid, strategy=check_strategy(strategy))
    except InpaintError as err:
        raise PageError(str(err)) from None
    seconds = time.perf_counter() - start
    results = {"model": model}
    if telea:
        results["telea"] = fill("telea", rgb, valid)
    if image.shape[2] == 4 and (image[..., 3] < 255).any():
        results = {k: np.dstack([v, image[..., 3]]) for k, v in results.items()}
    return results | {"seconds": seconds, "plan": plan}


def strategy_line(chosen: str, plan: Plan) -> str:
    """What ran, for the status line: 'crop (3 crops)', or 'auto → crop (3 crops)'."""
    return plan.describe() if chosen == plan.strategy else f"{chosen} → {plan.describe()}"


def model_summary(inpainter: Inpainter) -> str:
    """One line: the run's step, which weights, and the model's size."""
    import jax
    from flax import nnx

    params = sum(x.size for x in jax.tree.leaves(nnx.state(inpainter.model, nnx.Param)))
    config = inpainter.model.config
    weights = " · moving-average weights" if getattr(inpainter, "ema_decay", 0) else ""
    return (f"checkpoint step {inpainter.step}{weights} · {params / 1e6:.2f} M parameters · depth "
            f"{config.depth} · trained at {config.image_size} px")


def api_inpaint(inpainter: Inpainter, image_path: str, mask_path: str, out_dir: str,
                strategy: str = "auto") -> str:
    """The API endpoint: image file, mask file (white = hole) and strategy -> path of the
    result PNG, whose text chunk 'strategy' names what ran ('crop (3 crops)'). Both headers
    are checked, against the pixel limits and each other, before any decoding."""
    from pconv_jax.inpaint import load_pair, mask_size_error, with_alpha

    if not image_path or not mask_path:
        raise PageError("the inpaint endpoint takes two files, an image and a mask, and "
                        f"optionally a strategy ({', '.join(STRATEGIES)}; default auto)")
    strategy = check_strategy(strategy)
    try:
        image = _checked_header(image_path, "image", strategy)
        mask = read_header(mask_path, "mask")
        if not mask.may_equal(image):  # read_mask's words; _for_api says them for the API
            raise mask_size_error(mask_path, (mask.width, mask.height),
                                  (image.width, image.height))
        image, valid = load_pair(image_path, mask_path)
        alpha = read_alpha(image_path)
    except (InpaintError, ValueError, OSError) as err:
        raise PageError(_for_api(_without_server_paths(str(err), out_dir))) from None
    hole = valid == 0
    if not hole.any():
        raise PageError("the mask marks no hole: white (or any value above 50% grey) marks "
                        "the pixels to fill")
    result = fill(inpainter, image, hole, telea=False, strategy=strategy)
    out = os.path.join(tempfile.mkdtemp(dir=out_dir), "inpainted.png")
    write_png(out, with_alpha(result["model"], alpha, out), strategy=result["plan"].describe())
    return out


def write_png(path: str, image: np.ndarray, **text: str) -> None:
    """Writes (H,W,3|4) uint8 as a PNG with `text` as its text chunks (tEXt)."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    Image.fromarray(image).save(path, "PNG", pnginfo=info)


def _checked_header(path: str, what: str, strategy: str = "auto") -> Header:
    """read_header(path), refused when over the pixel limits (check_size): nothing is
    decoded yet."""
    header = read_header(path, what)
    check_size(what, header.width, header.height, strategy)
    return header


# The page sends one painted layer; a request with many is not the page's (each is decoded).
MAX_LAYERS = 4


class PendingBlobs(dict):
    """The editor's store of canvases sent ahead of their event (Gradio's `blob_storage`),
    bounded: past `max_entries` sends or `max_bytes` of them, the oldest are dropped (a
    client that sends and never asks would otherwise grow the server's memory without end)."""

    def __init__(self, max_entries: int = 16, max_bytes: int = 512 << 20):
        super().__init__()
        self.max_entries, self.max_bytes = max_entries, max_bytes

    def __setitem__(self, key, value) -> None:
        super().pop(key, None)  # re-inserted last: the newest
        super().__setitem__(key, value)
        while len(self) > 1 and (len(self) > self.max_entries or self.nbytes() > self.max_bytes):
            del self[next(iter(self))]

    def nbytes(self) -> int:
        """The bytes held: every background, layer and composite."""
        return sum(len(b or b"") for blobs in self.values()
                   for b in (blobs.background, blobs.composite, *blobs.layers))


def editor_files(value: dict | None, blobs: dict, folder: str) -> tuple[str | None, list[str]]:
    """The background and layer files of the editor's raw event value, nothing decoded.

    The browser sends its canvas as PNG blobs beforehand (kept in `blobs` under the value's
    id) and these are written into `folder`; a value may also name uploaded files. The
    composite is not used: the hole is where the layers are painted."""
    if not value:
        return None, []
    if value.get("id"):
        sent = blobs.pop(value["id"], None)
        if sent is None:
            return None, []
        files = [sent.background] + [layer for layer in sent.layers if layer is not None]
        paths = []
        for i, data in enumerate(files):
            if data is None:
                paths.append(None)
                continue
            path = os.path.join(folder, "background.png" if i == 0 else f"layer_{i - 1}.png")
            with open(path, "wb") as f:
                f.write(data)
            paths.append(path)
        return paths[0], paths[1:]
    background = (value.get("background") or {}).get("path")
    return background, [layer["path"] for layer in value.get("layers") or () if layer]


def read_editor(background: str | None, layers: list[str], strategy: str = "auto",
                ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(image (H,W,4) uint8, hole (H,W) bool) from the editor's files. Every header is checked
    against the pixel limits (those of `strategy`) and the background before any pixel is
    decoded; the image reads as the command line reads it (EXIF turn, 16-bit, palette), the
    layers one at a time."""
    if background is None:
        return None, None
    size = _checked_header(background, "image", strategy)
    if len(layers) > MAX_LAYERS:
        raise PageError(f"the request holds {len(layers)} painted layers, more than the "
                        f"{MAX_LAYERS} the page takes: clear the drawing and paint again")
    for path in layers:
        layer = read_header(path, "painted layer")
        if not layer.may_equal(size):
            raise PageError(f"a painted layer is {layer.width}x{layer.height} but the image "
                            f"is {size.width}x{size.height}: clear the drawing and paint "
                            "again")
    image = read_uint8(background, "RGBA")  # (H,W,4): opaque where the file has no alpha
    hole = np.zeros(image.shape[:2], bool)
    for path in layers:
        hole |= hole_from_layers([read_uint8(path, "RGBA", "painted layer")], hole.shape)
    return image, hole


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


def _without_server_paths(message: str, *folders: str) -> str:
    """A message with the server's folders (Gradio's uploads, `folders`) cut from file paths:
    a file is named by its name alone."""
    import re

    from gradio.utils import get_upload_folder

    roots = {get_upload_folder(), *folders}
    for root in roots | {os.path.realpath(r) for r in roots}:
        message = re.sub(re.escape(root.rstrip(os.sep)) + r"/(?:[^/\s'\"]+/)*", "", message)
    return message


# Gradio refuses a request naming a server file that was not uploaded; its message would show
# the server's absolute path (and it logs a traceback): the client is told this instead.
SERVER_PATH_REFUSED = ("a file named in the request was not uploaded to this server: upload "
                       "the files first (gradio_client's handle_file does)")


def _page(**settings) -> gr.Blocks:
    """gr.Blocks whose refusal of a non-uploaded server path is one line in the log and one in
    the client's message, without the path, and which gives an event's missing trailing inputs
    their components' defaults (a client of the two-input API gets strategy 'auto')."""
    import gradio as gr
    from gradio.exceptions import InvalidPathError

    class Page(gr.Blocks):  # made here: Gradio is an optional extra
        async def preprocess_data(self, block_fn, inputs, *args, **kwargs):
            # a request leaving out trailing inputs that have a default (the API's strategy)
            # gets their defaults, as gradio_client fills them in
            missing = block_fn.inputs[len(inputs):]
            if missing and all(getattr(b, "value", None) is not None for b in missing):
                inputs = [*inputs, *(b.value for b in missing)]
            try:
                return await super().preprocess_data(block_fn, inputs, *args, **kwargs)
            except InvalidPathError as err:
                reason = " ".join(str(err).split())
                print(f"pconv-jax app: refused a request: {reason}", file=sys.stderr,
                      flush=True)
                raise gr.Error(SERVER_PATH_REFUSED, print_exception=False) from None

    return Page(**settings)


def build(inpainter: Inpainter, *, out_dir: str | None = None,
          title: str = "pconv-jax inpainting") -> gr.Blocks:
    """The Gradio page and its API for `inpainter`; launch it with `.launch()`. Results are
    written below `out_dir` (a new temporary folder if None; the caller removes it)."""
    import gradio as gr

    out_dir = out_dir or tempfile.mkdtemp(prefix="pconv_app_")
    os.makedirs(out_dir, exist_ok=True)
    # Gradio's cache of uploads and results: files older than an hour go, checked every 10 min
    with _page(title=title, analytics_enabled=False, delete_cache=(600, 3600)) as page:
        gr.Markdown(f"## {title}\n{model_summary(inpainter)}", elem_id="model-info")
        editor, strategy, run, use, result, telea, status = _layout()
        # page and API share one slot (concurrency_id): one job at a time, the rest queue
        # preprocess=False: Gradio's editor would decode every layer (and the composite we do
        # not use) at whatever size it is sent; read_editor checks their headers first
        run.click(_on_inpaint(inpainter, out_dir, editor), [editor, strategy],
                  [result, telea, status], api_visibility="private", concurrency_id="model",
                  preprocess=False)
        # The result goes into the editor as a user's upload would (Gradio 6's editor hangs
        # when an event sets its value); the server only checks that there is a result.
        use.click(_on_use_result, result, None, js=USE_RESULT_JS, api_visibility="private",
                  queue=False, preprocess=False)
        _add_api(inpainter, out_dir)
    page.queue(default_concurrency_limit=1)  # one job at a time: the model holds the device
    return page


def _layout() -> tuple:
    """The page's components, (editor, strategy, run, use, result, telea, status): the photo
    editor, the strategy for large photos, the buttons and the status line on the left, the
    result and Telea's fill on the right."""
    import gradio as gr

    with gr.Row(equal_height=False):
        with gr.Column():  # the input, and what to do with it
            editor = gr.ImageEditor(
                label="Photo: paint the hole", type="numpy", image_mode="RGBA",
                sources=("upload", "clipboard"), transforms=(), layers=False,
                brush=gr.Brush(default_size="auto", colors=["#ffffff"], color_mode="fixed"),
                eraser=gr.Eraser(default_size="auto"), format="png", elem_id="editor")
            editor.blob_storage = PendingBlobs()
            strategy = gr.Radio(
                list(STRATEGIES), value="auto", label="Strategy for large photos",
                elem_id="strategy",
                info="full: the whole photo through the network; crop: a crop around each "
                     "group of holes, at the training size; resize: the photo scaled down "
                     "and the fill scaled back; auto: full up to twice the training size, "
                     "else crop, or resize when crops would cover most of the photo")
            with gr.Row():
                run = gr.Button("Inpaint", variant="primary", elem_id="inpaint")
                use = gr.Button("Use result as input", elem_id="use-result")
            status = gr.Markdown("Upload a photo and paint what should go.", elem_id="status")
        with gr.Column():  # beside it: the result, and the classical fill below it
            result = gr.Image(label="Partial convolutions (PNG)", type="filepath", format="png",
                              interactive=False, buttons=["download", "fullscreen"],
                              elem_id="result")
            telea = gr.Image(label="Telea (OpenCV), for comparison", type="filepath",
                             format="png", interactive=False, buttons=["download"],
                             elem_id="telea")
    return editor, strategy, run, use, result, telea, status


def _on_inpaint(inpainter: Inpainter, out_dir: str, editor: gr.ImageEditor,
                ) -> Callable[[dict | None, str | None], tuple[str, str, str]]:
    """The Inpaint button's event: the editor's raw value (Gradio decodes nothing) and the
    strategy -> (result PNG, Telea PNG, status line naming the strategy that ran)."""
    import shutil

    import gradio as gr

    # the model compiles once per shape of its input: the image's size under full or resize
    # (with the scale), the number of crops under crop (each crop is T x T)
    shapes_seen: set[tuple] = set()

    def on_inpaint(value: dict | None, strategy: str | None = "auto") -> tuple[str, str, str]:
        folder = tempfile.mkdtemp(dir=out_dir)
        try:
            strategy = check_strategy(strategy)
            background, layers = editor_files(value, editor.blob_storage, folder)
            image, hole = read_editor(background, layers, strategy)
            result = fill(inpainter, image, hole, strategy=strategy)
        except PageError as err:
            raise gr.Error(str(err), print_exception=False) from None
        except (InpaintError, ValueError, OSError) as err:
            raise gr.Error(_without_server_paths(str(err), out_dir),
                           print_exception=False) from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        h, w = image.shape[:2]
        plan = result["plan"]
        shape = (plan.describe(),) + (() if plan.strategy == "crop" else (h, w))
        compiled = "" if shape in shapes_seen else ", including compiling for this size"
        shapes_seen.add(shape)
        status = (f"Inpainted {w}×{h} px, {100 * hole.mean():.1f}% hole, strategy "
                  f"{strategy_line(strategy, plan)}, in {result['seconds']:.2f} s "
                  f"(model{compiled})")
        return (_save(out_dir, result["model"], "inpainted.png", strategy=plan.describe()),
                _save(out_dir, result["telea"], "telea.png"), status)

    return on_inpaint


def _on_use_result(result: dict | None) -> None:
    """The 'Use result as input' button's server side: the result is not read, only there."""
    import gradio as gr

    if not result:
        raise gr.Error("no result yet: inpaint first", print_exception=False)


def _add_api(inpainter: Inpainter, out_dir: str) -> None:
    """The API endpoint `inpaint` (image file, mask file, strategy -> PNG file), on components
    that the page does not show; call it inside the page's Blocks. The strategy's default,
    'auto', is the component's value: gradio_client fills it in when a call leaves it out, and
    the page (_page) does for a plain HTTP call sending two inputs."""
    import gradio as gr

    def on_api(image_file: str | None, mask_file: str | None,
               strategy: str | None = "auto") -> str:
        try:
            _prune(out_dir)
            return api_inpaint(inpainter, image_file, mask_file, out_dir, strategy)
        except PageError as err:
            raise gr.Error(str(err), print_exception=False) from None

    with gr.Row(visible=False):  # the API's own inputs and output, not shown on the page
        api_image = gr.File(label="image", type="filepath")
        api_mask = gr.File(label="mask (white = hole)", type="filepath")
        # a custom value reaches on_api, which names the choices in its one-line message
        api_strategy = gr.Dropdown(list(STRATEGIES), value="auto", allow_custom_value=True,
                                   label="strategy")
        api_out = gr.File(label="result (PNG)")
    api_button = gr.Button(visible=False)
    api_button.click(on_api, [api_image, api_mask, api_strategy], api_out, api_name="inpaint",
                     concurrency_id="model")


def _save(out_dir: str, image: np.ndarray, name: str, **text: str) -> str:
    """Writes a result as PNG `name` (with `text` chunks) in a new folder below out_dir
    (pruning old ones); its path."""
    _prune(out_dir)
    path = os.path.join(tempfile.mkdtemp(dir=out_dir), name)
    write_png(path, image, **text)
    return path


def _prune(folder: str, max_age_s: float = 3600.0) -> None:
    """Removes the per-request folders below `folder` older than max_age_s: results stay
    downloadable for an hour, as long as Gradio keeps uploads (delete_cache). Gradio serves
    them from there when `folder` lies in its upload folder (the command line's case), from
    its own copies otherwise."""
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
    signal.signal(signal.SIGTERM, _stop)  # as Ctrl+C: the server closes, its folder goes
    quiet_orbax_failures()  # an unreadable checkpoint is one line, not Orbax's tracebacks
    try:
        with private_folder() as root:
            return _serve(args, root)
    except KeyboardInterrupt:  # before the server ran (e.g. while the model loaded)
        return 0


def _serve(args: argparse.Namespace, root: str) -> int:
    """Loads the model and serves the page until Ctrl+C or SIGTERM; files live below root."""
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
    page = build(inpainter, out_dir=os.path.join(root, "results"))
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
    print(f"pconv-jax app: uploads and results in {root} (this user only; removed when the "
          "server stops)", flush=True)
    try:
        page.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        page.close()
    return 0


def _stop(signum, frame) -> None:
    """SIGTERM handler: stops the server as Ctrl+C does."""
    raise KeyboardInterrupt


# An upload cap above a 4096x4096 16-bit RGBA PNG (128 MB) and a MAX_PHOTO_PIXELS photo as
# JPEG (tens of MB); a 100-megapixel PNG may be larger: such a photo is sent as JPEG or WebP.
MAX_UPLOAD = "256mb"


if __name__ == "__main__":
    sys.exit(main())
