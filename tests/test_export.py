"""pconv_jax.export: the ONNX and StableHLO files give `Inpainter`'s result, without pconv-jax.

The reference is `Inpainter` (the JAX model through NumPy padding and compositing); the ONNX
graph is written independently from the parameters, so a wrong fold, phase or ratio shows.
The helpers `check_onnx_file` and `check_stablehlo_file` take any run's Inpainter and file,
so a run made another way (e.g. by `pconv_jax.convert`) is tested with the same two calls.
"""

import dataclasses
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pconv_jax import export
from pconv_jax.inpaint import Inpainter
from pconv_jax.model import PConvUNet, UNetConfig

ort = pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is missing")

ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def cases(multiple: int, sizes=((1, 2), (3, 1))) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, mask) batches: two batch sizes and two image sizes (in units of `multiple`),
    random photos in [0,1] and random masks with about 30% holes."""
    rng = np.random.default_rng(0)
    out = []
    for n, (a, b) in zip((1, 3), sizes, strict=True):
        h, w = a * multiple, b * multiple
        image = rng.random((n, h, w, 3)).astype(np.float32)
        mask = (rng.random((n, h, w, 1)) > 0.3).astype(np.float32)
        mask[:, : h // 2, : w // 2] = 0  # and one large hole
        out.append((image, mask))
    return out


def assert_like_inpainter(result, reference, image, mask, hole_atol):
    """Valid pixels bit-identical to the input; holes within hole_atol of the reference."""
    valid = mask[..., 0] > 0
    assert result.shape == image.shape and result.dtype == np.float32
    np.testing.assert_array_equal(result[valid], image[valid])
    np.testing.assert_allclose(result[~valid], reference[~valid], rtol=0, atol=hole_atol)
    assert np.any(result[~valid] != image[~valid])  # the holes were filled


def check_onnx_file(path: str, inpainter: Inpainter, atol: float = 1e-4) -> None:
    """One onnxruntime session (CPU provider) over two batch sizes and two image sizes."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for image, mask in cases(inpainter.multiple):
        (result,) = session.run(None, {"image": image, "mask": mask})
        assert_like_inpainter(result, inpainter(image, mask), image, mask, atol)


# Runs in a child process that has only jax and numpy: it fails if pconv_jax or flax loads.
STABLEHLO_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import jax
    exported = jax.export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
    inputs = np.load(sys.argv[2])
    results = {}
    for i in range(len(inputs.files) // 2):
        results[str(i)] = np.asarray(exported.call(inputs[f"image{i}"], inputs[f"mask{i}"]))
    np.savez(sys.argv[3], **results)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("pconv_jax", "flax"))
    assert not loaded, loaded
""")


def check_stablehlo_file(path: str, inpainter: Inpainter, tmp_path, atol: float = 1e-5) -> None:
    """The artifact in a fresh interpreter without pconv_jax on its path, two batch sizes
    and two image sizes, against the Inpainter."""
    batches = cases(inpainter.multiple)
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **{f"{k}{i}": a for i, b in enumerate(batches)
                        for k, a in zip(("image", "mask"), b, strict=True)})
    results = tmp_path / "results.npz"
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    child = subprocess.run([sys.executable, "-c", STABLEHLO_CHILD, path, str(inputs),
                            str(results)], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    with np.load(results) as out:
        for i, (image, mask) in enumerate(batches):
            assert_like_inpainter(out[str(i)], inpainter(image, mask), image, mask, atol)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pconv_jax.export", *args], env=ENV,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_onnx_cli_file_matches_inpainter(run_dir, inpainter, tmp_path):
    """`python -m pconv_jax.export --out x.onnx` on a trained run: one file, any batch and
    any multiple of 2**depth, gives Inpainter's result (holes within 1e-4, valid exact)."""
    out = tmp_path / "deploy" / "model.onnx"
    run = _cli("--workdir", run_dir, "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and "multiples of 8" in run.stdout
    check_onnx_file(str(out), inpainter)
    import onnx

    proto = onnx.load(str(out))
    assert "multiples of 8" in proto.doc_string and "hole" in proto.doc_string
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["pconv_jax.step"] == str(inpainter.step)
    assert props["pconv_jax.weights"] == inpainter.weights == "average (ema_decay 0.9)"
    assert props["pconv_jax.size_multiple"] == "8"


@pytest.mark.slow
def test_stablehlo_file_runs_without_pconv_jax(run_dir, inpainter, tmp_path):
    """The .stablehlo artifact runs through jax.export.deserialize(...).call in a process
    that never imports pconv_jax or flax, within 1e-5 of the Inpainter."""
    out = tmp_path / "model.stablehlo"
    assert export.main(["--workdir", run_dir, "--out", str(out)]) == 0
    check_stablehlo_file(str(out), inpainter, tmp_path)


def test_bfloat16_stablehlo_is_close_and_onnx_refuses_it(run_dir, inpainter, tmp_path, capsys):
    """--dtype bfloat16: the artifact computes in bfloat16 (close to float32 in the holes,
    valid pixels exact); for .onnx it is one error line and no file."""
    out = tmp_path / "bf16.stablehlo"
    assert export.main(["--workdir", run_dir, "--out", str(out), "--dtype", "bfloat16"]) == 0
    exported = jax.export.deserialize(bytearray(out.read_bytes()))
    assert "bf16" in exported.mlir_module()
    image, mask = cases(inpainter.multiple)[0]
    result = np.asarray(exported.call(image, mask))
    assert_like_inpainter(result, inpainter(image, mask), image, mask, hole_atol=0.1)
    capsys.readouterr()
    onnx_out = tmp_path / "bf16.onnx"
    assert export.main(["--workdir", run_dir, "--out", str(onnx_out), "--dtype",
                        "bfloat16"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bfloat16" in err[0] and not onnx_out.exists()


def _random_statistics(model: PConvUNet, seed: int = 0) -> PConvUNet:
    """Gives every BatchNorm non-trivial running statistics and affine parameters and every
    bias a value, so a wrong fold or a bias left in holes shows."""
    rng = np.random.default_rng(seed)
    for block in (*model.encoder, *model.decoder):
        if block.bn is not None:
            c = block.bn.mean.shape[0]
            block.bn.mean[...] = jnp.asarray(rng.normal(0, 0.2, c), jnp.float32)
            block.bn.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32)
            block.bn.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, c), jnp.float32)
            block.bn.bias[...] = jnp.asarray(rng.normal(0, 0.2, c), jnp.float32)
        if block.bias is not None:
            block.bias[...] = jnp.asarray(rng.normal(0, 0.2, block.bias.shape), jnp.float32)
    model.eval()
    return model


def _narrow(config: UNetConfig, divisor: int) -> UNetConfig:
    """The preset's depth and kernels with its widths divided (tests stay small)."""
    return dataclasses.replace(config, encoder_widths=tuple(
        max(2, w // divisor) for w in config.encoder_widths))


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["paper", "paper_256", "tiny"])
def test_every_preset_exports_at_narrow_width(preset, tmp_path):
    """Each preset's depth and kernels (widths / 64) export to both formats, and both match
    the Inpainter at the smallest sizes the preset takes (up to 256 px for depth 8)."""
    config = _narrow(getattr(UNetConfig, preset)(), 64)
    model = _random_statistics(PConvUNet(config, rngs=nnx.Rngs(1)))
    # a random 16-layer net outputs values in the hundreds, far outside [-1, 1], where float32
    # rounding alone exceeds 1e-4 and clipping hides the holes: scale its last layer as a
    # trained one would be scaled
    image, mask = cases(2**config.depth)[0]
    raw, _ = model(jnp.asarray(image * 2 - 1), jnp.asarray(mask))
    last = model.decoder[-1]
    last.kernel[...] = last.kernel[...] / float(jnp.abs(raw).max())
    last.bias[...] = last.bias[...] / float(jnp.abs(raw).max())
    inpainter = Inpainter(model)
    onnx_path = tmp_path / "model.onnx"
    data = export.onnx_model(model).SerializeToString()
    export.check_onnx(data)
    onnx_path.write_bytes(data)
    check_onnx_file(str(onnx_path), inpainter)
    # symbolic shapes take XLA's convolution and the low-resolution decoder path where the
    # Inpainter's concrete small shapes take im2col: the same sums, rounded differently
    exported = jax.export.deserialize(bytearray(export.export_stablehlo(model)))
    image, mask = cases(inpainter.multiple)[0]
    result = np.asarray(exported.call(image, mask))
    assert_like_inpainter(result, inpainter(image, mask), image, mask, 1e-4)


@pytest.mark.slow
def test_paper_512_net_exports_by_shape():
    """The paper's full-width 512 px network: the exported function traces under symbolic
    N, 256h, 256w (parameters abstract, nothing computed) and its ONNX graph (zero weights)
    passes the checker and stays below protobuf's 2 GiB limit."""
    import onnx

    config = UNetConfig.paper()
    abstract = nnx.eval_shape(lambda: PConvUNet(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)

    def composite(state, image, mask):
        return export.composite_fn(nnx.merge(graphdef, state))(image, mask)

    exported = jax.export.export(jax.jit(composite))(state, *export.symbolic_specs(8))
    assert str(exported.out_avals[0].shape) == "(N, 256*h, 256*w, 3)"
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), state)
    model = nnx.merge(graphdef, zeros)
    data = export.onnx_model(model).SerializeToString()
    assert 100 * 2**20 < len(data) < 2**31  # ~158 MiB of float32 weights
    onnx.checker.check_model(data)


def test_onnx_honours_imagenet_normalization_and_no_first_bias(tmp_path):
    """UNetConfig.normalization = "imagenet" (the network works in ImageNet-normalised space)
    and a first layer without bias: the ONNX graph equals the formula
    clip((post(net(pre(2*image - 1))) + 1) / 2) in the holes, with pre(x) =
    ((x + 1)/2 - mean)/std and post(y) = (y*std + mean)*2 - 1, net being the plain model."""
    config = UNetConfig.tiny(depth=3, width=4, image_size=32)
    model = _random_statistics(PConvUNet(config, rngs=nnx.Rngs(2)))
    model.encoder[0].bias = None  # first_bias=False: the first layer has no bias parameter
    imagenet = dataclasses.replace(config)
    object.__setattr__(imagenet, "normalization", "imagenet")  # before/after issue #19 alike
    model.config = imagenet
    data = export.onnx_model(model).SerializeToString()
    model.config = config  # the reference: the same parameters, no normalisation of its own
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    mean = np.asarray(export.IMAGENET_MEAN, np.float32)
    std = np.asarray(export.IMAGENET_STD, np.float32)
    for image, mask in cases(8):
        x = ((image * 2 - 1 + 1) / 2 - mean) / std
        y, _ = model(jnp.asarray(x), jnp.asarray(mask))
        expected = np.clip(((np.asarray(y) * std + mean) * 2 - 1 + 1) / 2, 0, 1)
        (result,) = session.run(None, {"image": image, "mask": mask})
        assert_like_inpainter(result, expected, image, mask, 1e-4)


def test_onnx_honours_the_ratio_cap(tmp_path):
    """A model with UNetConfig.ratio_cap (not the paper's form) exports its cap: the ONNX
    graph matches the capped model, and differs from the same weights' graph uncapped."""
    config = dataclasses.replace(UNetConfig.tiny(depth=3, width=4, image_size=32), ratio_cap=2)
    model = _random_statistics(PConvUNet(config, rngs=nnx.Rngs(3)))
    uncapped = PConvUNet(dataclasses.replace(config, ratio_cap=0.0), rngs=nnx.Rngs(3))
    nnx.update(uncapped, nnx.state(model))
    capped_graph, plain_graph = (
        ort.InferenceSession(export.onnx_model(m).SerializeToString(),
                             providers=["CPUExecutionProvider"]) for m in (model, uncapped))
    image, mask = cases(8)[0]
    (result,) = capped_graph.run(None, {"image": image, "mask": mask})
    assert_like_inpainter(result, Inpainter(model)(image, mask), image, mask, 1e-4)
    (plain,) = plain_graph.run(None, {"image": image, "mask": mask})
    assert float(np.abs(result - plain).max()) > 1e-3


def test_bad_requests_are_one_line_and_write_nothing(run_dir, tmp_path, capsys):
    """Missing run, missing step, unknown suffix, --out inside the run folder, an unwritable
    place: exit 1, one stderr line naming the problem, no file written anywhere."""
    before = sorted(os.listdir(run_dir))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    link = tmp_path / "link.onnx"
    link.symlink_to(os.path.join(run_dir, "config.json"))
    requests = {
        "not a training run": ["--workdir", str(tmp_path / "nope"),
                               "--out", str(tmp_path / "m.onnx")],
        "--step 999": ["--workdir", run_dir, "--step", "999", "--out", str(tmp_path / "m.onnx")],
        "must be a file ending in": ["--workdir", run_dir, "--out", str(tmp_path / "m.pt")],
        "lies inside the input folder": ["--workdir", run_dir,
                                         "--out", os.path.join(run_dir, "m.onnx")],
        "(resolved: ": ["--workdir", run_dir, "--out", str(link)],  # a link into the run
        "takes no files": ["--workdir", run_dir, "--out", "/proc/pconv_export.onnx"],
        "not a folder": ["--workdir", run_dir, "--out", str(blocker / "m.stablehlo")],
    }
    for needle, argv in requests.items():
        capsys.readouterr()
        assert export.main(argv) == 1, needle
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], (needle, err)
    assert sorted(os.listdir(tmp_path)) == ["a_file", "link.onnx"]
    assert sorted(os.listdir(run_dir)) == before


def test_failed_write_keeps_the_old_file_and_leaves_no_partial_one(run_dir, tmp_path,
                                                                    monkeypatch, capsys):
    """An existing --out is replaced only by a complete file: a failure on the way leaves
    the old one as it was and no temporary file; a success replaces it."""
    out = tmp_path / "model.stablehlo"
    out.write_bytes(b"old")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export.os, "replace", fail)
    assert export.main(["--workdir", run_dir, "--out", str(out)]) == 1
    assert "No space left" in capsys.readouterr().err
    assert out.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["model.stablehlo"]
    monkeypatch.undo()
    assert export.main(["--workdir", run_dir, "--out", str(out)]) == 0
    assert out.read_bytes() != b"old" and sorted(os.listdir(tmp_path)) == ["model.stablehlo"]


def test_symbolic_size_not_declared_a_multiple_is_one_clear_error():
    """Exporting with H, W free symbols (not 2**depth multiples) fails in check_inputs with
    a message that says how to declare them, not with JAX's inconclusive comparison."""
    model = PConvUNet(UNetConfig.tiny(depth=3, width=4, image_size=32), rngs=nnx.Rngs(0))
    n, h, w = jax.export.symbolic_shape("N, h, w")
    specs = (jax.ShapeDtypeStruct((n, h, w, 3), jnp.float32),
             jax.ShapeDtypeStruct((n, h, w, 1), jnp.float32))
    with pytest.raises(ValueError, match=r"not declared a multiple of 2\*\*depth = 8"):
        jax.export.export(jax.jit(export.composite_fn(model)))(*specs)


@pytest.mark.slow
def test_a_converted_naoto0804_run_exports(tmp_path):
    """A run made by `pconv_jax.convert` (ImageNet normalisation inside, a bias-free PConv1)
    exports to both formats, and each file gives its Inpainter's composite."""
    from pconv_jax import convert
    from tests.naoto_util import naoto_state

    np.savez(tmp_path / "state.npz", **naoto_state(4, 4, seed=1))
    run = str(tmp_path / "run")
    assert convert.main(["naoto0804", str(tmp_path / "state.npz"), "--workdir", run]) == 0
    inpainter = Inpainter.from_workdir(run)
    assert inpainter.model.config.normalization == "imagenet"
    for suffix, check in ((".onnx", check_onnx_file), (".stablehlo", None)):
        out = str(tmp_path / f"naoto{suffix}")
        assert export.main(["--workdir", run, "--out", out]) == 0
        if check:
            check(out, inpainter)
        else:
            check_stablehlo_file(out, inpainter, tmp_path)
