"""Training end to end on small images: devices, exact resume, signals, TFDS, learning."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from pconv_jax import checkpoint as ckpt
from pconv_jax import losses, train, vgg
from pconv_jax.model import PConvUNet
from tests.train_util import TINY_CLI_OVERRIDES, model_arrays, tiny_config

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
    config = tiny_config(steps=1)
    config.data.source = "tfds:places365_small/train"
    with tfds.testing.mock_data(num_examples=8):
        result = train.train_and_evaluate(config, str(tmp_path / "tfds"))
    assert result["step"] == 1 and np.isfinite(result["metrics"]["loss"])


def test_unprepared_tfds_dataset_is_a_clear_error(tmp_path):
    """A TFDS dataset that is not prepared: an error that says how to prepare it."""
    config = tiny_config(steps=1)
    config.data.source = "tfds:places365_small/train"
    config.data.tfds_data_dir = str(tmp_path / "empty")
    with pytest.raises(train.TrainingError, match="tfds build places365_small"):
        train.train_and_evaluate(config, str(tmp_path / "run"))


@pytest.mark.slow
def test_hole_loss_halves_on_a_fixed_batch():
    """~50 steps on one fixed batch: the hole loss falls to half or less (the model learns)."""
    config = tiny_config()
    model = PConvUNet(train.unet_config(config), rngs=nnx.Rngs(0))
    model.train()
    optimizer = nnx.Optimizer(model, train.optimizer_transform(config), wrt=nnx.Param)
    features = vgg.VGG16Features(vgg.random_weights(0))
    graphdef, state = nnx.split((model, optimizer))
    vgg_graphdef, vgg_state = nnx.split(features)
    step = jax.jit(train.make_train_step(graphdef, vgg_graphdef, losses.LossWeights(),
                                         train.learning_rate(config)))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    image = np.stack([yy, xx, (yy + xx) / 2], axis=-1)[None].repeat(2, 0)  # smooth gradients
    image = jnp.asarray(image * rng.uniform(0.5, 1.0, size=(2, 1, 1, 3)), jnp.float32)
    mask = np.ones((2, 32, 32, 1), np.float32)
    mask[:, 8:20, 10:22] = 0
    mask = jnp.asarray(mask)
    holes = []
    for _ in range(50):
        state, metrics = step(state, vgg_state, image, mask)
        holes.append(float(metrics["hole"]))
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
          *TINY_CLI_OVERRIDES], "cannot create the workdir"),
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


@pytest.mark.parametrize("key,value", [
    ("train.log_every", 0), ("train.image_every", 0), ("checkpoint.every_steps", 0),
    ("checkpoint.keep", 0), ("train.batch_size", 0), ("train.steps", -1), ("num_devices", 0),
    ("num_devices", 99), ("data.threads", -1), ("data.scale_range", (0.0, 1.0)),
])
def test_config_values_that_cannot_work_are_named(key, value):
    """Counts and intervals outside what a run can use: a TrainingError naming the key."""
    config = tiny_config()
    with config.unlocked():
        section, _, name = key.rpartition(".")
        (config[section] if section else config)[name] = value
    with pytest.raises(train.TrainingError, match=key.replace(".", r"\.")):
        train.check_config(config, device_count=2)
    train.check_config(tiny_config(), device_count=2)  # the unchanged config passes


def test_metrics_log_survives_a_half_written_line(tmp_path):
    """A killed run leaves a partial last line: resuming drops it and the steps past resume."""
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "lo')
    log = train.MetricsLog(str(tmp_path), resume_step=2, enabled=True)
    log.write({"step": 3, "loss": 0.5})
    log.close()
    assert [r["step"] for r in _read_metrics(tmp_path)] == [1, 2, 3]
    assert _read_metrics(tmp_path)[-1]["loss"] == 0.5


def test_help_lists_the_flags():
    """--help prints the flags and exits 0."""
    run = subprocess.run([sys.executable, "-m", "pconv_jax.train", "--help"], env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "--workdir" in run.stdout


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
    its checkpoint into phase 2 (one optimizer structure for every setting)."""
    workdir = str(tmp_path / "switch")
    train.train_and_evaluate(tiny_config(steps=2), workdir)
    result = train.train_and_evaluate(tiny_config(steps=4, finetune_step=3), workdir)
    records = _read_metrics(workdir)
    assert result["step"] == 4 and [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["phase"] for r in records] == [1, 1, 1, 2]


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
    second = train.train_and_evaluate(config, str(tmp_path / "phase2"))
    assert second["step"] == 0
    a, b = model_arrays(first["model"]), model_arrays(second["model"])
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
