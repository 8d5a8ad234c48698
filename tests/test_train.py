"""Training end to end on small images: devices, exact resume, signals, TFDS, learning."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pconv_jax import checkpoint as ckpt
from pconv_jax import config as config_lib
from pconv_jax import losses, optim, run_utils, train
from pconv_jax.model import PConvUNet
from tests.train_util import TINY_CLI_OVERRIDES, model_arrays, one_device_step, tiny_config

pytestmark = pytest.mark.filterwarnings("ignore:VGG-16 with RANDOM weights")
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}


def _read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_two_steps_on_two_devices_equal_one_device(tmp_path):
    """A 2-step run shards over 2 devices; BatchNorm over the global batch makes it equal 1."""
    assert jax.device_count() == 2
    results = {}
    for n in (1, 2):
        config = tiny_config(steps=2)
        config.num_devices = n
        results[n] = train.train_and_evaluate(config, str(tmp_path / f"dev{n}"))
        records = _read_metrics(tmp_path / f"dev{n}")
        assert [r["step"] for r in records] == [1, 2]
        for r in records:
            assert all(np.isfinite(r[k]) for k in ("loss", *losses.TERMS, "lr", "images_per_s"))
        assert os.path.isdir(tmp_path / f"dev{n}" / "checkpoints" / "2")
        assert os.path.isfile(tmp_path / f"dev{n}" / "samples" / "step_0000002.png")
        assert os.listdir(tmp_path / f"dev{n}" / "tensorboard")
        written = json.loads((tmp_path / f"dev{n}" / "config.json").read_text())
        assert written["train"]["steps"] == 2 and written["num_devices"] == n
        assert json.loads((tmp_path / f"dev{n}" / "versions.json").read_text())["jax"]
    one, two = model_arrays(results[1]["model"]), model_arrays(results[2]["model"])
    for key in one:
        # atol 1e-5 = 1% of the learning rate: Adam's first steps are ~lr * sign(grad), so a
        # gradient within rounding of zero may move by up to that much on either mesh.
        np.testing.assert_allclose(one[key], two[key], rtol=2e-4, atol=1e-5, err_msg=key)


@pytest.mark.slow
def test_restart_resumes_exactly(tmp_path):
    """4 straight steps and 2 + restart + 2 give bitwise identical parameters and statistics."""
    straight = train.train_and_evaluate(tiny_config(steps=4), str(tmp_path / "a"))
    train.train_and_evaluate(tiny_config(steps=2), str(tmp_path / "b"))
    resumed = train.train_and_evaluate(tiny_config(steps=4), str(tmp_path / "b"))
    a, b = model_arrays(straight["model"]), model_arrays(resumed["model"])
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert [r["step"] for r in _read_metrics(tmp_path / "b")] == [1, 2, 3, 4]
    assert [r["loss"] for r in _read_metrics(tmp_path / "b")] == \
        [r["loss"] for r in _read_metrics(tmp_path / "a")]


@pytest.mark.slow
def test_logged_values_are_means_over_the_log_interval(tmp_path):
    """With log_every=2 each line holds the mean of the two per-step values that log_every=1
    logs for the same (deterministic) run; lr is the last step's."""
    train.train_and_evaluate(tiny_config(steps=4), str(tmp_path / "every"))
    train.train_and_evaluate(tiny_config(steps=4, log_every=2), str(tmp_path / "pairs"))
    every, pairs = _read_metrics(tmp_path / "every"), _read_metrics(tmp_path / "pairs")
    assert [r["step"] for r in pairs] == [2, 4]
    for line, (a, b) in zip(pairs, [every[0:2], every[2:4]], strict=True):
        for key in ("loss", *losses.TERMS):
            assert line[key] == pytest.approx((a[key] + b[key]) / 2, rel=1e-6), key
        assert line["lr"] == b["lr"]


@pytest.mark.slow
def test_phase_two_freezes_encoder_batchnorm(tmp_path):
    """From train.finetune_step on, encoder BN statistics and affine stop; lr drops to 5e-5."""
    config = tiny_config(steps=2, finetune_step=2)
    config.optim.finetune_lr = 5e-5
    workdir = str(tmp_path / "ft")
    train.train_and_evaluate(tiny_config(steps=2, finetune_step=2), workdir)
    before = model_arrays(train.train_and_evaluate(config, workdir)["model"])
    config.train.steps = 4
    after = model_arrays(train.train_and_evaluate(config, workdir)["model"])
    enc_bn = [k for k in before if k.startswith("['encoder']") and "['bn']" in k]
    dec_bn = [k for k in before if k.startswith("['decoder']") and "['bn']" in k]
    assert enc_bn and dec_bn
    for key in enc_bn:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    assert all(np.any(before[k] != after[k]) for k in dec_bn)
    records = _read_metrics(workdir)
    assert records[-1]["lr"] == pytest.approx(5e-5) and records[-1]["phase"] == 2
    assert records[0]["lr"] == pytest.approx(1e-3) and records[0]["phase"] == 1


@pytest.mark.slow
def test_tfds_source_trains_under_mock_data(tmp_path):
    """data.source = tfds:NAME/SPLIT reads through tfds.data_source (mocked: no files)."""
    tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not "
                               "installed (an offline GPU host): no TFDS source to mock")
    config = tiny_config(steps=1)
    config.data.source = "tfds:places365_small/train"
    with tfds.testing.mock_data(num_examples=8):
        result = train.train_and_evaluate(config, str(tmp_path / "tfds"))
    assert result["step"] == 1 and np.isfinite(result["metrics"]["loss"])


def test_unprepared_tfds_dataset_is_a_clear_error(tmp_path):
    """A TFDS dataset that is not prepared: an error that says how to prepare it."""
    pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed "
                        "(an offline GPU host): the next test covers that case")
    config = tiny_config(steps=1)
    config.data.source = "tfds:places365_small/train"
    config.data.tfds_data_dir = str(tmp_path / "empty")
    with pytest.raises(train.TrainingError, match="tfds build places365_small"):
        train.train_and_evaluate(config, str(tmp_path / "run"))


def test_tfds_source_without_tensorflow_datasets_is_one_line(tmp_path, monkeypatch):
    """Where tensorflow-datasets is not installed (it is only needed for tfds: sources), such
    a source is a TrainingError saying so, not an ImportError traceback."""
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now fails
    config = tiny_config(steps=1)
    config.data.source = "tfds:places365_small/train"
    with pytest.raises(train.TrainingError, match="needs tensorflow-datasets.*image folder"):
        train.train_and_evaluate(config, str(tmp_path / "run"))


@pytest.mark.slow
def test_hole_loss_halves_on_a_fixed_batch():
    """~50 steps on one fixed batch: the hole loss falls to half or less (the model learns)."""
    step, built = one_device_step(tiny_config())  # the paper's loss, random VGG-16 weights
    state, vgg_state = built.arrays(), built.vgg_state
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    image = np.stack([yy, xx, (yy + xx) / 2], axis=-1)[None].repeat(2, 0)  # smooth gradients
    image = np.round(image * rng.uniform(0.5, 1.0, size=(2, 1, 1, 3)) * 255).astype(np.uint8)
    mask = np.ones((2, 32, 32, 1), np.uint8)
    mask[:, 8:20, 10:22] = 0
    holes = []
    for _ in range(50):
        record = train.empty_record(built.record_keys)
        state, record = step(state, vgg_state, record, image, mask)
        holes.append(float(record["sums"]["hole"]))  # one step: the sum is the step's value
    assert holes[-1] <= 0.5 * holes[0], holes[::10]


@pytest.mark.slow
def test_sigterm_saves_and_the_next_run_resumes(tmp_path):
    """SIGTERM mid-run: a checkpoint at the current step, exit 0; the same command resumes."""
    workdir = str(tmp_path / "sig")
    cmd = [sys.executable, "-m", "pconv_jax.train", "--config", "experiments/configs/demo.py",
           "--workdir", workdir, *TINY_CLI_OVERRIDES]
    proc = subprocess.Popen([*cmd, "--config.train.steps=10000"], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline:
        if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 3:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM: saved step" in out
    saved = int(out.split("SIGTERM: saved step ")[1].split()[0])
    assert saved >= 3 and os.path.isdir(os.path.join(workdir, "checkpoints", str(saved)))
    again = subprocess.run([*cmd, f"--config.train.steps={saved + 1}"], env=ENV,
                           capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming from step {saved}" in again.stdout
    steps = [r["step"] for r in _read_metrics(workdir)]
    assert steps == list(range(1, saved + 2))  # no logged step repeated


def test_cli_errors_are_messages_not_tracebacks(tmp_path):
    """Missing flags, bad overrides or values, a missing VGG file, a workdir that cannot be
    made and broken config files exit non-zero with a message."""
    base = [sys.executable, "-m", "pconv_jax.train"]
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    syntax_error = tmp_path / "syntax.py"
    syntax_error.write_text("def get_config(:\n")
    no_get_config = tmp_path / "noget.py"
    no_get_config.write_text("x = 1\n")
    cases = [
        (["--config", "experiments/configs/demo.py"], "--workdir are required"),
        (["--config", "experiments/configs/demo.py", "--workdir", str(tmp_path),
          "--config.train.no_such_key=1"], "no_such_key"),
        (["--config", "experiments/configs/demo.py", "--workdir", str(tmp_path),
          *TINY_CLI_OVERRIDES, "--config.vgg.weights=/nonexistent/vgg16.safetensors"],
         "vgg.weights"),
        (["--config", "experiments/configs/demo.py", "--workdir", str(tmp_path),
          *TINY_CLI_OVERRIDES, "--config.train.log_every=0"], "train.log_every must be"),
        (["--config", "experiments/configs/demo.py", "--workdir", str(not_a_folder / "run"),
          *TINY_CLI_OVERRIDES], "cannot create --workdir"),
        (["--config", str(syntax_error), "--workdir", str(tmp_path)],
         "cannot load config file"),
        (["--config", str(no_get_config), "--workdir", str(tmp_path)], "has no get_config()"),
        (["--config", "experiments/configs/demo.py", "--workdir", str(tmp_path),
          *TINY_CLI_OVERRIDES, "--coordinator_address=localhost:1", "--num_processes=2",
          "--process_id=2"], "process id 2 must lie in 0..1"),
    ]
    for args, message in cases:
        run = subprocess.run(base + args, env=ENV, capture_output=True, text=True, timeout=120)
        assert run.returncode != 0 and message in run.stderr, (args, run.stderr[-1500:])
        assert "Traceback" not in run.stderr


@pytest.mark.parametrize("finetune_step", [-1, 60])
def test_cosine_schedule_follows_the_formula(finetune_step):
    """optim.schedule='cosine': lr(t) = lr * (1 + cos(pi t / T)) / 2 over phase 1 (T = the
    fine-tuning step, else train.steps), then optim.finetune_lr; 'constant' stays at lr."""
    config = tiny_config(steps=100, finetune_step=finetune_step)
    config.optim.lr, config.optim.finetune_lr = 1e-3, 5e-5
    assert [float(optim.learning_rate(config)(t)) for t in (0, 59)] == pytest.approx([1e-3] * 2)
    config.optim.schedule = "cosine"
    schedule = optim.learning_rate(config)
    end = finetune_step if finetune_step > 0 else 100
    for t in range(0, end + 1, 7):
        want = 1e-3 * (1 + math.cos(math.pi * t / end)) / 2
        assert float(schedule(t)) == pytest.approx(want, rel=1e-5, abs=1e-12), t
    if finetune_step > 0:
        assert [float(schedule(t)) for t in (60, 99)] == pytest.approx([5e-5, 5e-5])


@pytest.mark.parametrize("key,value", [
    ("train.log_every", 0), ("train.image_every", 0), ("checkpoint.every_steps", 0),
    ("checkpoint.keep", 0), ("train.batch_size", 0), ("train.steps", -1), ("num_devices", 0),
    ("num_devices", 99), ("data.threads", -1), ("data.scale_range", (0.0, 1.0)),
    ("data.scale_range", (0.3, 0.8)), ("data.workers", -2), ("train.eval_every", -1),
    ("data.eval_pairs", 0), ("vgg.fallback", "zero"), ("seed", -1), ("optim.lr", -1.0),
    ("optim.lr", 0.0), ("optim.finetune_lr", float("nan")), ("optim.b2", 1.0),
    ("loss.weights.hole", -1.0), ("loss.weights.style_out", float("inf")),
    ("data.image_size", 100_000), ("data.workers", 100_000), ("data.threads", 100_000),
    ("data.eval_pairs", 100_000), ("data.colour_jitter", -0.1), ("data.colour_jitter", 2.0),
    ("optim.schedule", "linear"), ("optim.schedule", ""), ("optim.ema_decay", 1.0),
    ("optim.ema_decay", -0.1),
])
def test_config_values_that_cannot_work_are_named(key, value):
    """Counts and intervals outside what a run can use: a ConfigError naming the key."""
    config = tiny_config()
    with config.unlocked():
        section, _, name = key.rpartition(".")
        (config[section] if section else config)[name] = value
    with pytest.raises(config_lib.ConfigError, match=key.replace(".", r"\.")):
        config_lib.check_config(config, device_count=2)
    config_lib.check_config(tiny_config(), device_count=2)  # the unchanged config passes


def test_stray_positional_argument_is_refused(tmp_path, monkeypatch, capsys):
    """`... --workdir runs/x extra_arg` used to train anyway: now exit 2, naming the argument,
    before any work (no workdir is created)."""
    argv = ["train", "--config", "experiments/configs/demo.py", "--workdir",
            str(tmp_path / "x"), "extra_arg"]
    monkeypatch.setattr("sys.argv", argv)  # ml_collections reads its overrides there
    with pytest.raises(SystemExit) as exited:
        train.main(argv)
    assert exited.value.code == 2
    assert "unexpected argument(s) extra_arg" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux's read-only /proc")
def test_unwritable_workdir_is_one_line(tmp_path, monkeypatch, capsys):
    """An existing folder that takes no files (/proc here: writable by nobody, root included)
    ended in an OSError traceback from Orbax; now one line naming it, exit 1."""
    argv = ["train", "--config", "experiments/configs/demo.py", "--workdir", "/proc",
            "--config.train.steps=1"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exited:
        train.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 1 and "Traceback" not in err
    assert "cannot write into --workdir /proc" in err


def test_unknown_key_is_one_plain_line(tmp_path, monkeypatch, capsys):
    """A misspelt override names the key and ml_collections' suggestion on one line, without
    the escaped quotes and newline of the raw KeyError."""
    argv = ["train", "--config", "experiments/configs/demo.py", "--workdir",
            str(tmp_path / "x"), "--config.train.stepz=3"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exited:
        train.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    first = err.splitlines()[0]
    assert first.startswith("error: unknown config key stepz; Did you mean \"steps\"")
    assert "\\" not in first and "--config.train.stepz" in first


def test_metrics_log_survives_a_half_written_line(tmp_path):
    """A killed run leaves a partial last line: resuming drops it and the steps past resume."""
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "lo')
    log = run_utils.MetricsLog(str(tmp_path), resume_step=2, enabled=True)
    log.write({"step": 3, "loss": 0.5})
    log.close()
    assert [r["step"] for r in _read_metrics(tmp_path)] == [1, 2, 3]
    assert _read_metrics(tmp_path)[-1]["loss"] == 0.5


def test_help_lists_the_flags():
    """--help prints the flags and every config key of default_config with its default, in
    the form it is typed (no developer notes), and exits 0."""
    run = subprocess.run([sys.executable, "-m", "pconv_jax.train", "--help"], env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "--workdir" in run.stdout
    listed = {line.split("=")[0].strip() for line in run.stdout.splitlines()
              if line.startswith("  --config.")}

    def leaves(node, prefix):  # every leaf key of a ConfigDict, dotted
        return [name for key, value in node.items() for name in (
            leaves(value, f"{prefix}{key}.") if hasattr(value, "items") else [prefix + key])]

    assert listed == set(leaves(config_lib.default_config(), "--config."))
    assert "--config.loss.weights.hole=6.0" in run.stdout
    assert "--config.data.scale_range=(1.0,1.0)" in run.stdout
    assert "jitted step" not in run.stdout  # the module docstring is for developers


def _two_processes(workdir: str, *extra: str) -> list[str]:
    """Runs tests/distributed_driver.py as processes 0 and 1; their stdout (both exit 0)."""
    import portpicker

    port = portpicker.pick_unused_port()
    procs = [subprocess.Popen(
        [sys.executable, "tests/distributed_driver.py", f"localhost:{port}", str(i), workdir,
         *extra],
        env={**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outs]


@pytest.mark.slow
def test_two_processes_with_jax_distributed(tmp_path):
    """Two processes on localhost (jax.distributed, CPU): both finish with equal parameters."""
    workdir = str(tmp_path / "dist")
    _two_processes(workdir)
    first = np.load(os.path.join(workdir, "params_0.npz"))
    second = np.load(os.path.join(workdir, "params_1.npz"))
    assert set(first.files) == set(second.files) and first.files
    for key in first.files:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


@pytest.mark.slow
def test_cli_two_processes_stop_together_on_one_sigterm(tmp_path):
    """`python -m pconv_jax.train --coordinator_address/--num_processes/--process_id`: two
    processes train together; SIGTERM reaching only process 0 stops both at one step (none is
    left waiting in a collective), both exit 0, and that step's checkpoint is there."""
    import portpicker

    workdir = str(tmp_path / "cli_dist")
    port = portpicker.pick_unused_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "pconv_jax.train", "--config", "experiments/configs/demo.py",
         "--workdir", workdir, *TINY_CLI_OVERRIDES, "--config.train.steps=10000",
         f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
        env={**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        metrics = os.path.join(workdir, "metrics.jsonl")
        deadline = time.time() + 300
        while time.time() < deadline and not (
                os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 2):
            time.sleep(0.5)
        procs[0].send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    saved = [int(out.split(": saved step ")[1].split()[0]) for out, _ in outs]
    assert saved[0] == saved[1] >= 2
    assert "SIGTERM: saved step" in outs[0][0] and "another process" in outs[1][0]
    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(saved[0])))


def test_missing_config_file_is_a_message(tmp_path):
    """A config path that does not exist: exit 2, the path named, no traceback."""
    run = subprocess.run([sys.executable, "-m", "pconv_jax.train", "--config",
                          str(tmp_path / "none.py"), "--workdir", str(tmp_path)], env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "none.py" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    """A diverging run stops naming the step and terms; the saved checkpoint stays readable."""
    workdir = str(tmp_path / "nan")
    config = tiny_config(steps=1)
    config.checkpoint.every_steps = 1
    train.train_and_evaluate(config, workdir)  # a good checkpoint at step 1
    config.train.steps = 30
    config.optim.lr = 1e30  # diverges within a few steps
    with pytest.raises(train.TrainingError, match=r"non-finite loss at step \d+: .*"
                       r"last good checkpoint is step \d+") as info:
        train.train_and_evaluate(config, workdir)
    good = int(str(info.value).split("last good checkpoint is step ")[1].split()[0])
    config.train.steps = good
    config.optim.lr = 1e-3
    again = train.train_and_evaluate(config, workdir)  # resumes from it without error
    assert again["step"] == good


@pytest.mark.slow
def test_unreadable_latest_checkpoint_falls_back(tmp_path):
    """If the newest checkpoint is damaged, the run warns and resumes from the one before."""
    workdir = tmp_path / "fallback"
    config = tiny_config(steps=2)
    config.checkpoint.every_steps = 1
    train.train_and_evaluate(config, str(workdir))
    for path in (workdir / "checkpoints" / "2").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    config.train.steps = 3
    with pytest.warns(UserWarning, match="checkpoint 2 .* trying an older one"):
        result = train.train_and_evaluate(config, str(workdir))
    assert result["step"] == 3
    assert [r["step"] for r in _read_metrics(workdir)] == [1, 2, 3]


@pytest.mark.slow
def test_no_restorable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    """Every checkpoint damaged: a clear error, and the run's metrics stay as they were."""
    workdir = tmp_path / "damaged"
    train.train_and_evaluate(tiny_config(steps=2), str(workdir))
    before = (workdir / "metrics.jsonl").read_text()
    for path in (workdir / "checkpoints").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"), \
            pytest.raises(ckpt.UnreadableCheckpointError, match=r"none of the checkpoints \[2\]"):
        train.train_and_evaluate(tiny_config(steps=4), str(workdir))
    assert (workdir / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_setting_finetune_step_on_a_phase_one_run_resumes_it(tmp_path):
    """A phase-1 workdir (finetune_step=-1) resumed with finetune_step set: it continues from
    its checkpoint into phase 2 (one optimizer structure for every setting). finetune_step=2,
    as in the phase-2 test above: the two share its compiled phase-2 step."""
    workdir = str(tmp_path / "switch")
    train.train_and_evaluate(tiny_config(steps=2), workdir)
    result = train.train_and_evaluate(tiny_config(steps=4, finetune_step=2), workdir)
    records = _read_metrics(workdir)
    assert result["step"] == 4 and [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["phase"] for r in records] == [1, 1, 2, 2]


@pytest.mark.slow
def test_bfloat16_compute_trains(tmp_path):
    """train.compute_dtype=bfloat16: convolutions in bfloat16, float32 parameters, finite loss."""
    config = tiny_config(steps=2, compute_dtype="bfloat16")
    result = train.train_and_evaluate(config, str(tmp_path / "bf16"))
    assert np.isfinite(result["metrics"]["loss"])
    assert result["model"].encoder[0].dtype == jnp.bfloat16
    assert result["model"].encoder[0].eps == 1e-6  # the authors' eps under mixed precision
    assert all(v.dtype == np.float32 for v in model_arrays(result["model"]).values())


@pytest.mark.slow
def test_init_from_starts_phase_two_from_a_phase_one_run(tmp_path):
    """train.init_from copies the model of another run's newest checkpoint, not its step."""
    first = train.train_and_evaluate(tiny_config(steps=2), str(tmp_path / "phase1"))
    config = tiny_config(steps=0, finetune_step=0, init_from=str(tmp_path / "phase1"))
    config.optim.ema_decay = 0.99  # its moving average starts at those weights too
    # (phase 1 kept no average: init_from reads trained weights either way)
    second = train.train_and_evaluate(config, str(tmp_path / "phase2"))
    assert second["step"] == 0
    a, b = model_arrays(first["model"]), model_arrays(second["model"])
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for x, y in zip(jax.tree.leaves(nnx.state(first["model"], nnx.Param)),
                    jax.tree.leaves(second["average"].params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_resume_across_a_worker_count_change_is_exact(tmp_path):
    """4 steps read by 1 worker process equal 2 steps read in-process (workers=0) resumed for
    2 more by 2 workers: parameters, statistics and logged losses bitwise."""
    def run(steps, workers, workdir):
        config = tiny_config(steps=steps)
        config.data.workers = workers
        return train.train_and_evaluate(config, str(tmp_path / workdir))

    straight = run(4, 1, "a")
    run(2, 0, "b")
    resumed = run(4, 2, "b")
    a, b = model_arrays(straight["model"]), model_arrays(resumed["model"])
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert [r["loss"] for r in _read_metrics(tmp_path / "b")] == \
        [r["loss"] for r in _read_metrics(tmp_path / "a")]


@pytest.mark.slow
def test_non_finite_loss_is_named_without_per_step_syncs(tmp_path, monkeypatch):
    """A run that diverges at some step s, logging every 6 steps, fetches the device's metrics
    only at its log step (no implicit device-to-host copy anywhere), and still names s and
    its non-finite terms: the same step a run that logs (and syncs) every step names."""
    import shutil

    config = tiny_config(steps=1)
    config.checkpoint.every_steps = 1
    train.train_and_evaluate(config, str(tmp_path / "good"))  # a good checkpoint at step 1
    shutil.copytree(tmp_path / "good", tmp_path / "every")
    config.train.steps = 6
    config.optim.lr = 1e30  # diverges within a few steps
    config.checkpoint.every_steps = 1000
    named = {}
    fetches = []
    real_fetch = train.fetch
    monkeypatch.setattr(train, "fetch", lambda tree: fetches.append(1) or real_fetch(tree))
    for workdir, log_every in (("good", 6), ("every", 1)):
        config.train.log_every = log_every
        fetches.clear()
        with jax.transfer_guard_device_to_host("disallow"), \
                pytest.raises(train.TrainingError, match=r"non-finite loss at step") as info:
            train.train_and_evaluate(config, str(tmp_path / workdir))
        named[log_every] = str(info.value).split("non-finite loss at step ")[1].split(":")[0]
        assert "last good checkpoint is step 1" in str(info.value)
        assert len(fetches) == (1 if log_every == 6 else int(named[1]) - 1)  # from step 2
    assert named[6] == named[1] and 2 <= int(named[1]) <= 6


@pytest.mark.slow
def test_l1_only_run_has_no_vgg_and_logs_the_terms_it_has(tmp_path):
    """With the perceptual and style weights at 0 the compiled step has no VGG-16: the same
    convolutions as the UNet's own forward+backward and Adam update, and FLOPs within 25% of
    it (the paper's loss needs over twice as many); those terms are absent from
    metrics.jsonl, or logged (finite) with loss.log_zero_terms."""
    config = tiny_config(steps=1)
    for term in losses.VGG_TERMS:
        config.loss.weights[term] = 0.0
    step, built = one_device_step(config)
    assert built.vgg_state is None and built.record_keys == ("loss", "valid", "hole", "tv")
    graphdef, state = nnx.split((built.model, built.optimizer))
    image = jnp.zeros((2, 32, 32, 3), jnp.uint8)
    mask = jnp.ones((2, 32, 32, 1), jnp.uint8)
    step = step.lower(state, None, train.empty_record(built.record_keys), image, mask)

    def bare_step(state, target, mask):  # the UNet's forward + backward and Adam, no loss
        model, optimizer = nnx.merge(graphdef, state)

        def l1(model):
            return jnp.mean(jnp.abs(model(target, mask)[0] - target))

        optimizer.update(model, nnx.grad(l1)(model))
        return nnx.state((model, optimizer))

    bare = jax.jit(bare_step).lower(state, image.astype(jnp.float32), mask.astype(jnp.float32))
    full, paper = one_device_step(tiny_config(steps=1))  # the paper's loss
    full = full.lower(paper.arrays(), paper.vgg_state, train.empty_record(paper.record_keys),
                      image, mask)
    convs = [f.as_text().count("stablehlo.convolution") for f in (step, bare, full)]
    assert convs[0] == convs[1] < convs[2] - 14, convs  # not one VGG convolution
    flops = [f.compile().cost_analysis()["flops"] for f in (step, bare, full)]
    # the loss's own elementwise work weighs more at 32 px than at the paper's sizes
    assert flops[0] <= 1.25 * flops[1] < flops[2] / 2, flops

    train.train_and_evaluate(config, str(tmp_path / "l1"))
    assert set(_read_metrics(tmp_path / "l1")[0]) & set(losses.VGG_TERMS) == set()
    config.loss.log_zero_terms = True
    train.train_and_evaluate(config, str(tmp_path / "logged"))
    record = _read_metrics(tmp_path / "logged")[0]
    assert all(np.isfinite(record[t]) for t in losses.TERMS)


def test_held_out_scores_match_independent_psnr():
    """HeldOut's Telea PSNR and a fill's PSNR equal scikit-image's PSNR of the composites,
    computed here from cv2.inpaint; a perfect fill scores the 100 dB cap and l1 0; its fixed
    masks span hole ratios 0.05..0.55."""
    import cv2
    from skimage.metrics import peak_signal_noise_ratio

    from pconv_jax import data, masks

    held = run_utils.HeldOut(data.open_source("samples:chelsea,coffee"), 32, 6, seed=3)
    assert held.gts.shape == (6, 32, 32, 3) and held.masks.shape == (6, 32, 32, 1)
    ratios = [masks.hole_ratio(m[..., 0]) for m in held.masks]
    assert 0.04 <= ratios[0] < 0.2 and ratios[-1] >= 0.5
    gt = held.gts.astype(np.float64) / 255
    valid = held.masks.astype(np.float64)

    def expected_psnr(fill):  # fill (P,S,S,3) in [0,1]
        comp = valid * gt + (1 - valid) * fill
        return np.mean([peak_signal_noise_ratio(g, c, data_range=1.0)
                        for g, c in zip(gt, comp, strict=True)])

    telea = np.stack([cv2.inpaint(g, (1 - m[..., 0]).astype(np.uint8), 3, cv2.INPAINT_TELEA)
                      for g, m in zip(held.gts, held.masks, strict=True)]) / 255
    assert held.telea_psnr == pytest.approx(expected_psnr(telea), rel=1e-4)

    def zeros(state, image, mask):
        return jnp.zeros(image.shape, jnp.float32)

    def truth(state, image, mask):
        return image.astype(jnp.float32) / 255

    scored = held.score(zeros, None, batch=4)
    assert scored["eval_psnr"] == pytest.approx(expected_psnr(np.zeros_like(gt)), rel=1e-4)
    zero_comp = valid * gt  # the holes filled with 0
    assert scored["eval_l1"] == pytest.approx(100 * np.abs(zero_comp - gt).mean(), rel=1e-4)
    assert scored["eval_psnr_telea"] == held.telea_psnr
    perfect = held.score(truth, None)
    assert perfect["eval_psnr"] > 90 and perfect["eval_l1"] == pytest.approx(0, abs=1e-3)


@pytest.mark.slow
def test_eval_every_logs_held_out_scores(tmp_path):
    """train.eval_every=2 on a 4-step run: held-out records at steps 2 and 4 (finite PSNR,
    the same Telea PSNR each time) beside the loss records; without data.eval_source the
    setting is refused."""
    config = tiny_config(steps=4, eval_every=2)
    config.data.eval_source = "samples:chelsea"
    config.data.eval_pairs = 4
    train.train_and_evaluate(config, str(tmp_path / "eval"))
    records = _read_metrics(tmp_path / "eval")
    evals = [r for r in records if "eval_psnr" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(np.isfinite(r["eval_psnr"]) for r in evals)
    assert evals[0]["eval_psnr_telea"] == evals[1]["eval_psnr_telea"]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    # wall_s: seconds since the loop began, never decreasing, in both kinds of record
    clock = [r["wall_s"] for r in records]
    assert clock == sorted(clock) and clock[0] > 0 and len(clock) == 6
    config.data.eval_source = ""
    with pytest.raises(train.TrainingError, match="train.eval_every needs data.eval_source"):
        train.train_and_evaluate(config, str(tmp_path / "none"))


def _cli_model(workdir):
    """The model of a CLI run's newest checkpoint (demo config + TINY_CLI_OVERRIDES)."""
    config = tiny_config()
    model = PConvUNet(config_lib.unet_config(config), rngs=nnx.Rngs(0))
    step = ckpt.load_model(workdir, model)
    return step, model_arrays(model)


@pytest.mark.slow
def test_kill_9_mid_run_resumes_bitwise_and_leaves_no_worker(tmp_path):
    """SIGKILL to the training CLI (1 data worker, batches prefetched) after its first
    checkpoint: its worker processes end within seconds, and running the same command again
    ends with the model and logged losses of an uninterrupted run, bitwise."""
    import psutil

    cmd = [sys.executable, "-m", "pconv_jax.train", "--config", "experiments/configs/demo.py",
           *TINY_CLI_OVERRIDES, "--config.data.workers=1", "--config.checkpoint.every_steps=3",
           "--config.train.steps=150"]
    straight = subprocess.run([*cmd, "--workdir", str(tmp_path / "a")], env=ENV,
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    workdir = str(tmp_path / "b")
    checkpoints = os.path.join(workdir, "checkpoints")
    proc = subprocess.Popen([*cmd, "--workdir", workdir], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (os.path.isdir(checkpoints) and any(
            name.isdigit() for name in os.listdir(checkpoints))):
        time.sleep(0.05)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert proc.poll() is None, "the run ended before it could be killed"
    assert children, "no data worker was started"
    proc.kill()
    proc.wait()
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, [p.cmdline() for p in alive]
    killed_at = len(_read_metrics(workdir))
    assert killed_at < 150
    again = subprocess.run([*cmd, "--workdir", workdir], env=ENV, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    (step_a, a), (step_b, b) = _cli_model(str(tmp_path / "a")), _cli_model(workdir)
    assert step_a == step_b == 150
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert [r["loss"] for r in _read_metrics(workdir)] == \
        [r["loss"] for r in _read_metrics(tmp_path / "a")]


def test_printed_tensorboard_command_survives_spaces(tmp_path, monkeypatch, capsys):
    """The closing 'tensorboard --logdir ...' line is a shell command that works as printed
    for a workdir with spaces (shlex reads back the path)."""
    import shlex

    workdir = str(tmp_path / "my runs" / "demo 1")
    argv = ["train", "--config", "experiments/configs/demo.py", "--workdir", workdir,
            *TINY_CLI_OVERRIDES, "--config.train.steps=0"]
    monkeypatch.setattr("sys.argv", argv)
    train.main(argv)
    line = next(x for x in capsys.readouterr().out.splitlines() if "tensorboard --logdir" in x)
    words = shlex.split(line.split("tensorboard:", 1)[1])
    assert words == ["tensorboard", "--logdir", os.path.join(workdir, "tensorboard")]


OLD_RUN = os.path.join(os.path.dirname(__file__), "data", "run_f81edd1")


@pytest.mark.slow
def test_a_run_written_before_the_trainer_was_split_resumes_and_evaluates(tmp_path):
    """tests/data/run_f81edd1 was trained by the trainer of commit f81edd1 (before train.py
    became config, optim, run_utils and train; tiny_config, workers 0, checkpoints at steps
    1 and 2). Today's trainer resumes its step-1 checkpoint and reaches the step-2 model and
    loss the old trainer saved, and the Inpainter opens the run and keeps valid pixels."""
    import shutil

    from pconv_jax.inpaint import Inpainter

    old, run = tmp_path / "old", tmp_path / "run"
    shutil.copytree(OLD_RUN, old)
    shutil.copytree(OLD_RUN, run)
    shutil.rmtree(run / "checkpoints" / "2")
    config = tiny_config(steps=2)
    config.checkpoint.every_steps = 1
    resumed = train.train_and_evaluate(config, str(run))
    assert resumed["step"] == 2
    saved = model_arrays(Inpainter.from_workdir(str(old), step=2).model)
    for key, value in model_arrays(resumed["model"]).items():
        np.testing.assert_allclose(value, saved[key], rtol=1e-5, atol=1e-7, err_msg=key)
    old_loss, new_loss = (_read_metrics(folder)[-1]["loss"] for folder in (old, run))
    assert new_loss == pytest.approx(old_loss, rel=1e-5)
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
    mask = np.ones((32, 32), np.float32)
    mask[8:20, 4:16] = 0
    out = Inpainter.from_workdir(str(run))(image, mask)
    np.testing.assert_array_equal(out[mask == 1], image[mask == 1])
    assert not np.array_equal(out[mask == 0], image[mask == 0])

