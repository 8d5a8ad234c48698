"""No command line writes over what it reads: pconv_jax.paths and its use by every CLI."""

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from pconv_jax import evaluate, inpaint, train
from pconv_jax.paths import OverlapError, check_outputs


def _tree_digest(*roots):
    """{path: sha256} of every file and symlink below (or at) the given paths."""
    digest = {}
    for root in roots:
        paths = [root] if os.path.isfile(root) else [
            os.path.join(d, f) for d, _, files in os.walk(root) for f in files]
        for path in paths:
            with open(path, "rb") as f:
                digest[path] = hashlib.sha256(f.read()).hexdigest()
    return digest


@pytest.fixture
def inputs(tmp_path):
    """photos/{a,b}.png, masks/{a,b}.png (white = hole) and a run folder with no checkpoint."""
    rng = np.random.default_rng(0)
    for folder in ("photos", "masks"):
        (tmp_path / folder).mkdir()
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            tmp_path / "photos" / f"{name}.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[8:16, 8:16] = 255
        Image.fromarray(mask).save(tmp_path / "masks" / f"{name}.png")
    (tmp_path / "run").mkdir()
    return tmp_path


def _spellings(target, tmp_path):
    """Ways to name `target` (or a folder holding it) as an output: the same path, with
    './x/../', through a symlink, and its parent folder."""
    link = tmp_path / f"link_to_{os.path.basename(target)}"
    if not link.exists():
        link.symlink_to(target)
    parent, name = os.path.split(str(target))
    return {"same": str(target), "dotdot": os.path.join(parent, ".", name, "..", name),
            "symlink": str(link), "parent": parent}


def test_overlap_relations_are_found_and_named(tmp_path):
    """Same path, an output inside an input folder, an output folder holding an input: each
    is an OverlapError naming both flags; siblings, a name that merely shares a prefix, and
    inputs that are not on disk (samples, tfds:) pass."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "x.png").write_bytes(b"x")
    photos = str(tmp_path / "photos")
    for out, relation in ((photos, "are the same path"),
                          (os.path.join(photos, "out"), "lies inside the input folder"),
                          (str(tmp_path), "is a folder that holds")):
        with pytest.raises(OverlapError, match=relation) as info:
            check_outputs({"--out": out}, {"--images": photos})
        assert f"--out {out} " in str(info.value) and f"--images {photos} " in str(info.value)
    check_outputs({"--out": str(tmp_path / "photos2")}, {"--images": photos})
    check_outputs({"--out": str(tmp_path / "results")}, {"--images": photos, "--masks": None})
    check_outputs({"--out": str(tmp_path)}, {"--images": "samples", "--x": "tfds:a/train"})


CASES = [  # (command, input flag it reads, which input the arrangement targets)
    ("inpaint", "--image", "photos/a.png"), ("inpaint", "--mask", "masks/a.png"),
    ("inpaint-folder", "--images", "photos"), ("inpaint-folder", "--masks", "masks"),
    ("evaluate", "--images", "photos"), ("evaluate", "--masks", "masks"),
    ("train", "data.source", "photos"), ("train", "data.masks", "masks"),
]


def _run(command, inputs, out, capsys, monkeypatch):
    """Runs one CLI in-process with `out` as its output; (exit status, stderr)."""
    photos, masks, run = (str(inputs / n) for n in ("photos", "masks", "run"))
    if command == "inpaint":
        status = inpaint.main(["--workdir", run, "--image", f"{photos}/a.png",
                               "--mask", f"{masks}/a.png", "--out", out])
    elif command == "inpaint-folder":
        status = inpaint.main(["--workdir", run, "--images", photos, "--masks", masks,
                               "--out", out])
    elif command == "evaluate":
        status = evaluate.main(["--workdir", run, "--images", photos, "--masks", masks,
                                "--out", out])
    else:
        argv = ["train", "--config", "experiments/configs/demo.py", "--workdir", out,
                f"--config.data.source={photos}", f"--config.data.masks={masks}",
                "--config.train.eval_every=0"]
        monkeypatch.setattr("sys.argv", argv)  # ml_collections finds its overrides there
        with pytest.raises(SystemExit) as exited:
            train.main(argv)
        status = exited.value.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("command,flag,target", CASES)
@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "parent"])
def test_every_cli_refuses_an_output_over_an_input(inputs, capsys, monkeypatch, command, flag,
                                                  target, spelling):
    """For each CLI and each input it reads, an output naming that input (same path,
    './x/../x', a symlink, its parent folder) is refused with one line naming both flags,
    before any model is loaded (the run folder has no checkpoint, which would be the error
    otherwise), and every input file stays byte-identical."""
    out = _spellings(inputs / target, inputs)[spelling]
    before = _tree_digest(str(inputs / "photos"), str(inputs / "masks"))
    status, err = _run(command, inputs, out, capsys, monkeypatch)
    assert status == 1, err
    out_flag = "--workdir" if command == "train" else "--out"
    # a parent folder holds both inputs: the first one checked is named
    named = [f for c, f, _ in CASES if c == command] if spelling == "parent" else [flag]
    assert err.startswith(f"error: {out_flag} ") and any(f" {f} " in err for f in named), err
    assert "nothing was done" in err and "no checkpoint" not in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert _tree_digest(str(inputs / "photos"), str(inputs / "masks")) == before
    assert not os.path.exists(os.path.join(out, "metrics.jsonl"))


def test_output_in_the_runs_checkpoints_is_refused(inputs, capsys):
    """inpaint and evaluate never write into the checkpoints they read."""
    checkpoints = str(inputs / "run" / "checkpoints")
    os.mkdir(checkpoints)
    status = inpaint.main(["--workdir", str(inputs / "run"), "--image",
                           str(inputs / "photos" / "a.png"), "--mask",
                           str(inputs / "masks" / "a.png"), "--out",
                           os.path.join(checkpoints, "x.png")])
    assert status == 1 and "--workdir's checkpoints" in capsys.readouterr().err
    status = evaluate.main(["--workdir", str(inputs / "run"), "--images", "samples",
                            "--out", str(inputs / "run")])
    assert status == 1 and "holds --workdir's checkpoints" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--size", "100000"], "--size must be between 8 and 4096, got 100000"),
    (["--per-bucket", "0"], "--per-bucket must be >= 1, got 0"),
])
def test_make_eval_set_ranges_name_the_flag(tmp_path, capsys, argv, message):
    """make-eval-set refuses a negative seed, a size that cannot fit in memory (it died in a
    MemoryError traceback) or no masks: exit 2, the flag named, nothing written."""
    from pconv_jax import masks

    with pytest.raises(SystemExit) as exited:
        masks.main(["make-eval-set", "--out", str(tmp_path / "m"), *argv])
    assert exited.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("argv,message", [
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--size", "100000"], "--size must be between 8 and 4096, got 100000"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
])
def test_evaluate_ranges_name_the_flag(tmp_path, capsys, argv, message):
    """evaluate's numeric flags out of range: exit 2 naming the flag, before any model."""
    with pytest.raises(SystemExit) as exited:
        evaluate.main(["--workdir", str(tmp_path / "none"), "--images", "samples",
                       "--out", str(tmp_path / "o"), *argv])
    assert exited.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", ["empty image", "mask size", "unwritable out"])
def test_inpaint_checks_inputs_before_loading_the_model(inputs, capsys, case):
    """A 0-byte image, a mask of another size, or an output folder that takes no files is
    reported first (the run folder here is not even a training run, which would be the
    error otherwise), in well under a second instead of after the model loads."""
    import time

    image, mask = str(inputs / "photos" / "a.png"), str(inputs / "masks" / "a.png")
    out = str(inputs / "out.png")
    if case == "empty image":
        image = str(inputs / "empty.png")
        open(image, "wb").close()
        expected = f"cannot read image {image}"
    elif case == "mask size":
        mask = str(inputs / "big_mask.png")
        Image.fromarray(np.zeros((40, 36), np.uint8)).save(mask)
        expected = f"mask {mask} is 36x40 but the image {image} is 32x32"
    else:
        out = "/proc/pconv_out.png"  # no one, root included, may create files in /proc
        expected = "cannot write /proc/pconv_out.png"
    start = time.perf_counter()
    status = inpaint.main(["--workdir", str(inputs / "not_a_run"), "--image", image,
                           "--mask", mask, "--out", out])
    err = capsys.readouterr().err
    assert status == 1 and expected in err and "training run" not in err, err
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("command,shown", [
    ("inpaint", "(default: 4)"), ("evaluate", "(default: 10)"), ("make-eval-set", "(default: 512)"),
])
def test_help_shows_the_defaults(capsys, command, shown):
    """Each argparse CLI's --help gives every flag's default (batch size, masks per bucket,
    mask size) and exits 0."""
    from pconv_jax import masks

    main, argv = {"inpaint": (inpaint.main, ["--help"]), "evaluate": (evaluate.main, ["--help"]),
                  "make-eval-set": (masks.main, ["make-eval-set", "--help"])}[command]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0 and shown in " ".join(capsys.readouterr().out.split())
