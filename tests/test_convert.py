"""pconv_jax.convert: naoto0804's PyTorch checkpoints as runs that compute exactly its network.

The yardsticks are independent of our code: tests/reference.py's NumPy forward of that
network (written from its facts, per-channel masks in full), and, where a torch interpreter
is given (PCONV_TORCH_PYTHON, which `make test` sets up), benchmarks/torch_pconv.py's PyTorch
network with its own output and its own `torch.save` files in both formats.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from pconv_jax import convert
from pconv_jax.inpaint import Inpainter
from tests import reference
from tests.naoto_util import IMAGENET_MEAN, IMAGENET_STD, naoto_inputs, naoto_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = ((32, 32), (32, 64))  # two image sizes (multiples of 2**4), one not square


def reference_result(state, image, valid):
    """(raw output, composite) on [0, 1] of the NumPy reference of naoto0804's network: the
    image normalised as its data set does, the output unnormalised, composited with the mask."""
    x = ((image - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2).astype(np.float64)
    m = np.repeat(valid[:, None], 3, axis=1).astype(np.float64)  # (N,3,H,W) per-channel mask
    out, out_mask = reference.naoto_unet(x * m, m, state)
    out01 = out.transpose(0, 2, 3, 1) * IMAGENET_STD + IMAGENET_MEAN
    comp = valid[..., None] * image + (1 - valid[..., None]) * out01
    return out01, comp, out_mask


@pytest.fixture(scope="module")
def naoto_run(tmp_path_factory):
    """(state, run folder) of a random depth-4, width-4 naoto0804 network converted from .npz."""
    folder = tmp_path_factory.mktemp("naoto")
    state = naoto_state(4, 4, seed=0)
    np.savez(folder / "state.npz", **state)
    assert convert.main(["naoto0804", str(folder / "state.npz"),
                         "--workdir", str(folder / "run")]) == 0
    return state, str(folder / "run")


@pytest.mark.parametrize("size", SIZES)
def test_converted_run_computes_naoto0804s_network(naoto_run, size):
    """The converted Inpainter equals the NumPy reference: raw output within 1e-5 on [0,1],
    the composite within 1e-5 in the holes (the reference clipped to [0, 1], as images are
    stored), valid pixels bit-identical, and the output mask equal."""
    state, run = naoto_run
    inpainter = Inpainter.from_workdir(run)
    image, valid = naoto_inputs(*size, seed=1)
    out01, comp, out_mask = reference_result(state, image, valid)

    raw, mask = inpainter.model(jnp.asarray(image * 2 - 1), jnp.asarray(valid[..., None]))
    np.testing.assert_allclose((np.asarray(raw) + 1) / 2, out01, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(mask)[..., 0], out_mask[:, 0])

    result = inpainter(image, valid)
    hole = valid == 0
    np.testing.assert_allclose(result[hole], np.clip(comp, 0, 1)[hole], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(result[~hole], image[~hole])
    inside = ((comp[hole] > 0.01) & (comp[hole] < 0.99)).mean()
    assert inside > 0.5, f"only {inside:.0%} of hole values lie inside (0,1): a weak test"


def test_run_records_its_settings(naoto_run):
    """config.json and the checkpoint carry the network's settings; the step is the file's
    n_iter (0 for a bare state dict)."""
    _, run = naoto_run
    with open(os.path.join(run, "config.json")) as f:
        model = json.load(f)["model"]
    assert model["normalization"] == "imagenet" and model["first_bias"] is False
    assert model["encoder_widths"] == [4, 8, 16, 32] and model["encoder_kernels"] == [7, 5, 5, 3]
    inpainter = Inpainter.from_workdir(run)
    assert inpainter.step == 0
    assert inpainter.model.encoder[0].bias is None and inpainter.model.decoder[-1].bias is not None
    with open(os.path.join(run, "converted.json")) as f:
        assert json.load(f)["source"] == "naoto0804"


def test_cli_and_page_serve_the_converted_run(naoto_run, tmp_path):
    """`python -m pconv_jax.inpaint` and the page's API endpoint open the converted run and
    return what its Inpainter computes (white mask pixels = hole)."""
    from PIL import Image

    from pconv_jax import app, inpaint

    _, run = naoto_run
    image, valid = naoto_inputs(32, 48, batch=1, seed=7)
    photo = np.round(image[0] * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    Image.fromarray(((1 - valid[0]) * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    want = Inpainter.from_workdir(run)(photo, valid[0])
    assert inpaint.main(["--workdir", run, "--image", str(tmp_path / "photo.png"),
                         "--mask", str(tmp_path / "mask.png"),
                         "--out", str(tmp_path / "cli.png")]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "cli.png")), want)
    inpainter = Inpainter.from_workdir(run)
    app.build(inpainter, out_dir=str(tmp_path))
    served = app.api_inpaint(inpainter, str(tmp_path / "photo.png"), str(tmp_path / "mask.png"),
                             str(tmp_path))
    np.testing.assert_array_equal(np.asarray(Image.open(served)), want)


def test_kernel_absorbs_the_missing_sum_one_factor():
    """A single layer of each kind (the first, with its 3-channel input mask; a decoder concat
    with two masks): our partial conv with kernel / (kh*kw*C_in) equals its division by sum(M)."""
    from pconv_jax.ops import partial_conv, partial_conv_upsample_concat

    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 3, 16, 16))
    valid = (rng.uniform(size=(1, 16, 16)) > 0.4).astype(np.float64)
    weight = rng.normal(size=(5, 3, 7, 7))
    want, _ = reference.naoto_partial_conv(x, np.repeat(valid[:, None], 3, 1), weight, None, 2, 3)
    kernel = weight.transpose(2, 3, 1, 0) / (7 * 7 * 3)
    got, _ = partial_conv(jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32),
                          jnp.asarray(valid[..., None], jnp.float32),
                          jnp.asarray(kernel, jnp.float32), strides=2, padding=3)
    np.testing.assert_allclose(np.asarray(got), want.transpose(0, 2, 3, 1), atol=1e-5)

    low = rng.normal(size=(1, 4, 8, 8))
    low_valid = (rng.uniform(size=(1, 8, 8)) > 0.5).astype(np.float64)
    weight = rng.normal(size=(2, 7, 3, 3))
    bias = rng.normal(size=2)
    up = np.repeat(np.repeat(low, 2, 2), 2, 3)
    up_valid = np.repeat(np.repeat(low_valid, 2, 1), 2, 2)
    feats = np.concatenate([up, x], 1)
    masks = np.concatenate([np.repeat(up_valid[:, None], 4, 1), np.repeat(valid[:, None], 3, 1)],
                           1)
    want, _ = reference.naoto_partial_conv(feats, masks, weight, bias, 1, 1)
    got, _ = partial_conv_upsample_concat(
        (jnp.asarray(low.transpose(0, 2, 3, 1), jnp.float32),
         jnp.asarray(low_valid[..., None], jnp.float32)),
        (jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32),
         jnp.asarray(valid[..., None], jnp.float32)),
        jnp.asarray(weight.transpose(2, 3, 1, 0) / (3 * 3 * 7), jnp.float32),
        jnp.asarray(bias, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), want.transpose(0, 2, 3, 1), atol=1e-5)


def test_safetensors_and_npz_read_alike(tmp_path):
    """The same state dict as .safetensors and .npz reads into equal arrays."""
    from safetensors.numpy import save_file

    state = naoto_state(4, 2, seed=5)
    save_file(state, str(tmp_path / "s.safetensors"))
    np.savez(tmp_path / "s.npz", **state)
    a, _ = convert.read_naoto0804(str(tmp_path / "s.safetensors"))
    b, _ = convert.read_naoto0804(str(tmp_path / "s.npz"))
    assert set(a) == set(b) == set(state)
    assert all(np.array_equal(a[k], b[k]) for k in state)
    assert convert.naoto0804_layout(a, "s").widths == (2, 4, 8, 16)


def _damaged(kind: str) -> dict:
    state = naoto_state(4, 2, seed=2)
    if kind == "missing":
        del state["enc_3.bn.running_var"]
    elif kind == "shape":
        state["dec_2.conv.input_conv.weight"] = state["dec_2.conv.input_conv.weight"][:, :-1]
    elif kind == "unexpected":
        state["enc_1.conv.input_conv.bias"] = np.zeros(2, np.float32)
    elif kind == "mask_conv":
        state["dec_3.conv.mask_conv.weight"] = state["dec_3.conv.mask_conv.weight"] * 0.5
    elif kind == "nan":
        state["enc_2.bn.weight"] = state["enc_2.bn.weight"] * np.nan
    elif kind == "unrelated":
        state = {"features.0.weight": np.zeros((64, 3, 3, 3), np.float32)}
    return state


BAD_STATES = {
    "missing": "missing key 'enc_3.bn.running_var'",
    "shape": "'dec_2.conv.input_conv.weight' has shape (2, 5, 3, 3), expected (2, 6, 3, 3)",
    "unexpected": "unexpected key 'enc_1.conv.input_conv.bias'",
    "mask_conv": "'dec_3.conv.mask_conv.weight' must be all ones",
    "nan": "'enc_2.bn.weight' must hold finite",
    "unrelated": "missing key 'enc_1.conv.input_conv.weight': not a naoto0804",
}


def _refused(tmp_path, capsys, checkpoint, workdir=None) -> str:
    """Runs the CLI expecting failure: one stderr line, exit 1, no run folder, no staging."""
    workdir = workdir or str(tmp_path / "out" / "run")
    before = set(os.listdir(tmp_path))
    assert convert.main(["naoto0804", str(checkpoint), "--workdir", workdir]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert set(os.listdir(tmp_path)) == before  # nothing written, not even a parent folder
    return err


@pytest.mark.parametrize("kind", sorted(BAD_STATES))
def test_bad_state_dict_is_one_line_naming_the_key(tmp_path, capsys, kind):
    """Each damage is refused in one line that names the key; nothing is written."""
    np.savez(tmp_path / "bad.npz", **_damaged(kind))
    assert BAD_STATES[kind] in _refused(tmp_path, capsys, tmp_path / "bad.npz")


@pytest.mark.parametrize("name,content,message", [
    ("notes.npz", b"not a zip archive", "cannot read"),
    ("photo.safetensors", b"\x89PNG\r\n\x1a\n" + bytes(64), "cannot read"),
    ("model.ckpt", b"x", "unsupported"),
])
def test_non_checkpoint_files_are_refused(tmp_path, capsys, name, content, message):
    """Files that are no checkpoint at all: one line, nothing written."""
    (tmp_path / name).write_bytes(content)
    assert message in _refused(tmp_path, capsys, tmp_path / name)


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None,
                    reason="torch is installed in this interpreter: no no-torch message")
def test_pth_without_torch_says_what_to_do(tmp_path, capsys):
    """A .pth where torch is not installed: one line saying to install it or use .npz."""
    (tmp_path / "1000000.pth").write_bytes(b"PK\x03\x04")
    err = _refused(tmp_path, capsys, tmp_path / "1000000.pth")
    assert "torch is not installed" in err and ".npz" in err


def test_workdir_must_be_new_and_not_overlap_the_checkpoint(tmp_path, capsys):
    """--workdir that holds files, or that holds the checkpoint, is refused before any work."""
    np.savez(tmp_path / "state.npz", **naoto_state(4, 2))
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    assert "not an empty folder" in _refused(tmp_path, capsys, tmp_path / "state.npz",
                                             str(tmp_path / "used"))
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
    assert "holds CHECKPOINT" in _refused(tmp_path, capsys, tmp_path / "state.npz",
                                          str(tmp_path))


def test_finetuning_starts_from_the_converted_weights(tmp_path):
    """experiments/configs/finetune.py with the converted run: a training step starts from its
    weights (they move by about one Adam step), with the encoder's BatchNorm frozen; a model
    of other settings is refused by train.init_from."""
    import warnings

    from flax import nnx

    from pconv_jax import checkpoint as ckpt
    from pconv_jax import config as config_lib
    from pconv_jax import train
    from pconv_jax.model import PConvUNet

    np.savez(tmp_path / "state.npz", **naoto_state(4, 2, seed=4))
    run = str(tmp_path / "naoto")
    assert convert.main(["naoto0804", str(tmp_path / "state.npz"), "--workdir", run]) == 0
    spec = importlib.util.spec_from_file_location(
        "finetune", os.path.join(ROOT, "experiments", "configs", "finetune.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(run)
    config.data.source, config.data.threads, config.data.workers = "samples", 1, 0
    config.train.update(batch_size=2, steps=1, log_every=1, image_every=1000,
                        compute_dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random VGG weights
        result = train.train_and_evaluate(config, str(tmp_path / "ft"))
    before = Inpainter.from_workdir(run).model
    after = result["model"]
    for block_before, block_after in zip(before.encoder, after.encoder, strict=True):
        moved = np.abs(np.asarray(block_after.kernel[...]) - np.asarray(block_before.kernel[...]))
        assert 0 < moved.max() <= 2 * config.optim.finetune_lr
        if block_before.bn is not None:  # phase 2: frozen statistics and affine
            for name in ("mean", "var", "scale", "bias"):
                np.testing.assert_array_equal(getattr(block_after.bn, name)[...],
                                              getattr(block_before.bn, name)[...])
    other = module.get_config(run)
    other.model.normalization = "none"
    model = PConvUNet(config_lib.unet_config(other), rngs=nnx.Rngs(0))
    with pytest.raises(ckpt.ConfigMismatchError, match="model.normalization"):
        train.init_from(run, model, {"model.normalization": "none"})


# --- Against PyTorch: its network, its output, its own checkpoint files ------------------------

TORCH_PYTHON = os.environ.get("PCONV_TORCH_PYTHON", "")


def _torch_skip_reason() -> str | None:
    if not TORCH_PYTHON:
        return ("PCONV_TORCH_PYTHON is not set (`make test` sets it to .venv-torch/bin/python, "
                "an interpreter with torch): the .pth tests against PyTorch are skipped")
    probe = subprocess.run([TORCH_PYTHON, "-c", "import torch"], capture_output=True)
    if probe.returncode:
        return f"PCONV_TORCH_PYTHON={TORCH_PYTHON} cannot import torch: .pth tests skipped"
    return None


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    """The folder tests/torch_naoto.py filled in the torch interpreter."""
    reason = _torch_skip_reason()
    if reason:
        print(f"\nSKIPPED: {reason}", file=sys.stderr)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("torch")
    done = subprocess.run(
        [TORCH_PYTHON, os.path.join(ROOT, "tests", "torch_naoto.py"), str(folder),
         "--layer-size", "4", "--base-width", "4",
         "--sizes", ",".join(f"{h}x{w}" for h, w in SIZES)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


@pytest.mark.slow
def test_torch_checkpoints_read_in_both_formats(torch_files):
    """Legacy (pre-1.6) and zip `torch.save` files, whole checkpoints and a bare state dict,
    read into the same tensors (torch_naoto.py checked them against the network's own), with
    n_iter from the whole checkpoints."""
    with open(torch_files / "report.json") as f:
        report = json.load(f)
    assert (report["legacy"]["zip"], report["zip"]["zip"]) == (False, True)
    assert report["legacy"]["info"] == report["zip"]["info"] == {"n_iter": 1234}
    states = {name: np.load(torch_files / f"state_{name}.npz")
              for name in ("legacy", "zip", "bare")}
    keys = set(states["legacy"].files)
    assert all(set(s.files) == keys for s in states.values())
    assert all(np.array_equal(states["legacy"][k], s[k]) for s in states.values() for k in keys)


@pytest.mark.slow
def test_torch_checkpoint_inpaints_as_the_torch_network(torch_files, tmp_path):
    """Done when of issue #19: a checkpoint saved by that network's own code converts and
    inpaints as that network does: holes within 1e-4 of its composited, unnormalised result
    on [0, 1] (clipped, as any image it saves), valid pixels bit-identical to the photo."""
    run = str(tmp_path / "run")
    assert convert.main(["naoto0804", str(torch_files / "state_legacy.npz"),
                         "--workdir", run]) == 0
    inpainter = Inpainter.from_workdir(run)
    outputs = np.load(torch_files / "outputs.npz")
    for h, w in SIZES:
        image, valid = outputs[f"{h}x{w}/image"], outputs[f"{h}x{w}/valid"]
        theirs = outputs[f"{h}x{w}/comp"]
        result = inpainter(image, valid)
        hole = valid == 0
        np.testing.assert_allclose(result[hole], np.clip(theirs, 0, 1)[hole], rtol=0, atol=1e-4)
        np.testing.assert_array_equal(result[~hole], image[~hole])


@pytest.mark.parametrize("suffix,message", [
    ("", "name the run to start from"), (":/nonexistent/run", "is not a run folder")])
def test_finetune_config_without_a_run_is_one_line(tmp_path, capsys, monkeypatch, suffix,
                                                   message):
    """finetune.py without a run (or with a folder that is none): one line, no traceback."""
    from pconv_jax import train

    argv = ["train", "--config", f"experiments/configs/finetune.py{suffix}",
            "--workdir", str(tmp_path / "ft")]
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.argv", argv)  # ml_collections reads its flags there
    with pytest.raises(SystemExit) as exited:
        train.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and message in err.splitlines()[0], err
    assert "Traceback" not in err and not (tmp_path / "ft").exists()
