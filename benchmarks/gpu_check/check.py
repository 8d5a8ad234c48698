"""The JAX steps of the offline GPU check; `benchmarks/gpu_check/run.sh` runs each in its own
process (so each has the device, and its peak memory, to itself):

    python -m benchmarks.gpu_check.check env|tests|step|cli|forward|summary --out DIR [--tiny]

Each writes DIR/NAME.json (`status` ok / failed / skipped, a one-line `line`, its figures) and
prints that line last. `--tiny` shrinks every size for the CPU dry run in `make test`. Targets
(an H100/H200; tiny runs report them as not applicable): the whole check <= 8 minutes, the
512 px bfloat16 training step at >= 40 % MFU (its XLA FLOPs over the bf16 matrix rate measured
in the same run), the train CLI at >= 0.95 of the bare step's images/s, and >= 1.5x the PyTorch
network's images/s at the same batch and precision.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAPER_CONFIG = os.path.join(REPO, "experiments", "configs", "paper_places2.py")
TARGETS = {"total_s": 480.0, "mfu": 0.40, "cli_ratio": 0.95, "torch_ratio": 1.5}
# Test files of the GPU check (fast tests: `-m "not slow"`); browser and install tests excluded.
TEST_FILES = ["tests/test_ops.py", "tests/test_model.py", "tests/test_losses.py",
              "tests/test_train.py", "tests/test_mixed_precision.py", "tests/test_inpaint.py"]
TINY_TESTS = "test_hole_invariance or test_concat_form or test_unknown_key_is_one_plain_line"
MAX_BATCHES = (12, 16, 24, 32, 48, 64, 96, 128)  # largest-batch candidates (paper: batch 6)


def write(out: str, name: str, record: dict) -> None:
    """DIR/NAME.json, replaced whole (a step killed at its time limit leaves the last one)."""
    path = os.path.join(out, f"{name}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1, default=str)
    os.replace(path + ".tmp", path)


def read(out: str, name: str) -> dict:
    """DIR/NAME.json, or {} when that step wrote nothing."""
    try:
        with open(os.path.join(out, f"{name}.json")) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}


class Clock:
    """Seconds left of a step's budget."""

    def __init__(self, budget: float):
        self.end = time.monotonic() + budget

    def left(self) -> float:
        return self.end - time.monotonic()


def paper_config(dtype: str, batch: int, tiny: bool):
    """experiments/configs/paper_places2.py (what a user trains) at `dtype` and `batch`, on
    one device; with `tiny`, the tests' tiny network (config.tiny_overrides: depth 3, widths
    (4, 8, 16), 32 px), as the CLI step passes it too."""
    from pconv_jax import config as config_lib

    spec = importlib.util.spec_from_file_location("paper_places2", PAPER_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return config_lib.apply_overrides(module.get_config(), {
        **(config_lib.tiny_overrides() if tiny else {}), "train.compute_dtype": dtype,
        "train.batch_size": batch, "num_devices": 1})


def tiny_batch() -> int:
    """The dry run's batch: config.tiny_overrides()'s."""
    from pconv_jax import config as config_lib

    return config_lib.tiny_overrides()["train.batch_size"]


def device_memory() -> dict:
    """The first device's allocator figures (peak_bytes_in_use, bytes_limit), {} if none."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return {k: stats[k] for k in ("peak_bytes_in_use", "bytes_limit", "bytes_in_use")
            if k in stats}


def xla_memory(compiled) -> dict:
    """The compiled program's buffers as XLA plans them (bytes)."""
    try:
        m = compiled.memory_analysis()
        fields = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in
                  ("argument", "output", "alias", "temp", "generated_code")}
    except Exception:  # noqa: BLE001 - not every backend reports it
        return {}
    fields["total"] = fields["argument"] + fields["output"] - fields["alias"] + fields["temp"]
    return fields


def cost_flops(analysis) -> float:
    """'flops' of a cost analysis (a dict, or a list of one dict on older jax)."""
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0))


def step_flops(lowered, compiled) -> dict:
    """FLOPs of one call: XLA's cost analysis of the compiled program (used for MFU), of the
    lowered one, and convolutions + dots counted from the StableHLO by operand dtype. Where
    the compiled count is under 90 % of the conv + dot count and the lowered count is higher
    (XLA's GPU backend has counted cuBLAS calls as ~0: jax-ml/jax#22249), MFU uses the
    lowered program's count, and `flops_source` says so."""
    from benchmarks.bench import flops_by_dtype

    compiled_flops = cost_flops(compiled.cost_analysis())
    try:
        lowered_flops = cost_flops(lowered.cost_analysis())
    except Exception:  # noqa: BLE001
        lowered_flops = 0.0
    by_dtype = flops_by_dtype(lowered.as_text())
    conv_dot = sum(by_dtype.values())
    use_lowered = compiled_flops < 0.9 * conv_dot and lowered_flops > 1.05 * compiled_flops
    return {"flops_xla_compiled": compiled_flops, "flops_xla_lowered": lowered_flops,
            "flops_conv_dot_by_dtype": by_dtype,
            "flops": lowered_flops if use_lowered else compiled_flops,
            "flops_source": "lowered" if use_lowered else "compiled"}


def time_calls(call, seconds: float, min_windows: int = 5) -> dict:
    """Median seconds per call of `call()` (returns what to block on): calls dispatched
    back to back in windows of k (k sized from a first timed call to ~seconds/windows)."""
    import jax

    start = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - start
    k = max(1, min(200, int(seconds / min_windows / max(first, 1e-6))))
    per_call = []
    for _ in range(min_windows):
        start = time.perf_counter()
        for _ in range(k):
            result = call()
        jax.block_until_ready(result)
        per_call.append((time.perf_counter() - start) / k)
    return {"seconds": statistics.median(per_call), "calls_per_window": k,
            "windows": min_windows, "spread": (max(per_call) - min(per_call))
            / statistics.median(per_call)}


def is_oom(err: Exception) -> bool:
    """Whether an XLA error is the device running out of memory."""
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


# ---------------------------------------------------------------------------------------------
# env: what this host is, and whether the check can run on it
# ---------------------------------------------------------------------------------------------

NEEDED = ["jax", "flax", "optax", "orbax.checkpoint", "numpy", "scipy", "skimage", "cv2", "PIL",
          "safetensors", "grain", "ml_collections", "absl", "tqdm", "pytest"]
VERSIONS = ["jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax",
            "orbax-checkpoint", "numpy", "grain", "ml-collections", "tensorboardX",
            "tensorflow-datasets", "protobuf", "pytest", "torch", "onnxruntime"]


def env_step(args) -> dict:
    """Versions, devices, the bundle's packages found where they were installed."""
    from importlib import metadata

    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    versions = {"python": platform.python_version()}
    for name in VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    record = {"versions": versions, "missing": missing, "platform": platform.platform(),
              "cpus": os.cpu_count(), "processor": _processor(),
              "env": {k: os.environ.get(k) for k in ("JAX_PLATFORMS", "XLA_FLAGS",
                                                     "XLA_PYTHON_CLIENT_MEM_FRACTION",
                                                     "JAX_COMPILATION_CACHE_DIR")}}
    site = os.environ.get("GPU_CHECK_SITE", "")
    bundled = [f.split("-")[0] for f in sorted(os.listdir(args.bundle))
               if f.endswith(".whl")] if args.bundle and os.path.isdir(args.bundle) else []
    record["bundle"] = {}
    for name in bundled:
        try:
            where = str(metadata.distribution(name).locate_file(""))
        except metadata.PackageNotFoundError:
            where = None
        record["bundle"][name] = where
    lost = [n for n, where in record["bundle"].items()
            if where is None or (site and not os.path.realpath(where).startswith(
                os.path.realpath(site)))]
    import pconv_jax

    record["pconv_jax"] = os.path.dirname(pconv_jax.__file__)
    if missing or lost:
        record.update(status="failed", line=(
            f"missing here: {', '.join(missing + lost)} (make gpu-bundle on a networked "
            f"machine, copy .gpu-bundle with the tree)"))
        return record
    record["version_problems"] = version_problems()
    import jax

    device = jax.devices()[0]
    record.update(devices=[str(d) for d in jax.devices()], device_kind=device.device_kind,
                  platform_name=device.platform, memory=device_memory(),
                  default_matmul_precision=str(jax.config.jax_default_matmul_precision))
    record["nvidia_smi"] = _nvidia_smi()
    record.update(status="ok", line=(
        f"{device.platform}:{device.device_kind} x{jax.device_count()}, jax {jax.__version__}, "
        f"flax {versions['flax']}, {os.cpu_count()} CPUs, bundle "
        f"{len(bundled)} wheels from {site or 'site-packages'}")
        + (f"; outside pyproject's ranges: {', '.join(record['version_problems'])}"
           if record["version_problems"] else ""))
    return record


def version_problems() -> list[str]:
    """pconv-jax's dependencies installed here at a version outside pyproject.toml's range."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    problems = []
    for dep in map(Requirement, deps):
        try:
            version = metadata.version(dep.name)
        except metadata.PackageNotFoundError:
            continue  # not needed here, or named by the missing-module check
        if dep.specifier and not dep.specifier.contains(version, prereleases=True):
            problems.append(f"{dep.name} {version} (wants {dep.specifier})")
    return problems


def _processor() -> str:
    from benchmarks.bench import cpu_model

    return cpu_model()


def _nvidia_smi() -> str | None:
    """One line per GPU: name, driver, memory, SM clock and its maximum (read only)."""
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                               "clocks.sm,clocks.max.sm,power.limit", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None


# ---------------------------------------------------------------------------------------------
# tests: the fast tests on this device
# ---------------------------------------------------------------------------------------------


def tests_step(args) -> dict:
    """pytest -m 'not slow' on TEST_FILES on the device, stopped (SIGINT) at the budget."""
    import xml.etree.ElementTree as ET

    xml = os.path.join(args.work, "tests.xml")
    if os.path.exists(xml):
        os.remove(xml)
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider",
           "--durations=15", f"--junitxml={xml}", *TEST_FILES]
    selection = args.tests_k or (TINY_TESTS if args.tiny else None)
    if selection:
        cmd += ["-k", selection]
    if not args.tiny and importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", "6"]  # compiling is host work: 6 processes share the one device
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # pytest's CLI children too
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    stopped = False
    try:
        proc.wait(timeout=args.budget)
    except subprocess.TimeoutExpired:
        stopped = True
        proc.send_signal(signal.SIGINT)  # pytest stops and still writes its report
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    record = {"command": " ".join(cmd), "returncode": proc.returncode,
              "seconds": time.monotonic() - start, "stopped_at_budget": stopped}
    if not os.path.exists(xml):
        record.update(status="failed", line=f"pytest wrote no report (exit {proc.returncode})")
        return record
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    problems = []
    for case in suite.iter("testcase"):
        for kind in ("failure", "error"):
            node = case.find(kind)
            if node is not None:
                message = (node.get("message") or "").strip().splitlines()
                problems.append({"test": f"{case.get('classname')}::{case.get('name')}",
                                 "kind": kind, "message": message[0][:300] if message else ""})
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    record.update(counts, passed=passed, problems=problems)
    ok = proc.returncode == 0 and not stopped
    record["status"] = "ok" if ok else "failed"
    record["line"] = (f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
                      f"{counts['skipped']} skipped in {record['seconds']:.0f} s"
                      + (" (stopped at the time limit)" if stopped else ""))
    return record


# ---------------------------------------------------------------------------------------------
# step: the paper's 512 px training step, bare
# ---------------------------------------------------------------------------------------------


def matmul_rate(n: int, seconds: float) -> dict:
    """The device's bf16 matrix rate: an n x n x n product of random bf16 matrices."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
    product = jax.jit(jnp.matmul)
    for _ in range(3):
        jax.block_until_ready(product(a, b))
    timing = time_calls(lambda: product(a, b), seconds)
    return {"n": n, "seconds": timing["seconds"], "spread": timing["spread"],
            "flops_per_s": 2 * n**3 / timing["seconds"]}


def build_step(dtype: str, batch: int, tiny: bool):
    """The loop's jitted train step (train.create_train_state and train.train_step_fn on a
    one-device mesh) for the paper config at `dtype` and `batch`, with its placed arguments:
    random-weight VGG-16 (what the CLI uses without vgg.weights), random uint8 images and
    irregular masks."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from pconv_jax import train
    from pconv_jax.masks import irregular_mask

    config = paper_config(dtype, batch, tiny)
    state = train.create_train_state(config)
    state.model.freeze_encoder_batchnorm(False)  # phase 1, as the loop's first step sets it
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    step = train.train_step_fn(state, mesh)
    size = config.data.image_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    mask = np.stack([irregular_mask(size, rng, float(r))
                     for r in np.linspace(0.05, 0.5, batch)])[..., None].astype(np.uint8)
    record = train.empty_record(state.record_keys)
    placed = (jax.device_put(state.arrays(), replicated),
              jax.device_put(state.vgg_state, replicated), jax.device_put(record, replicated),
              jax.device_put(image, sharded), jax.device_put(mask, sharded))
    return step, placed


def measure_step(dtype: str, batch: int, tiny: bool, seconds: float) -> dict:
    """One row: compile time, FLOPs, XLA buffers, seconds per step, images/s, peak memory."""
    import jax
    import numpy as np

    start = time.perf_counter()
    step, (state, vgg_state, record, image, mask) = build_step(dtype, batch, tiny)
    lowered = step.lower(state, vgg_state, record, image, mask)
    compiled = lowered.compile()
    row = {"dtype": dtype, "batch": batch, "compile_s": time.perf_counter() - start,
           **step_flops(lowered, compiled), "xla_bytes": xla_memory(compiled)}
    carry = {"state": state, "record": record}

    def call():
        carry["state"], carry["record"] = compiled(carry["state"], vgg_state, carry["record"],
                                                   image, mask)
        return carry["record"]

    for _ in range(2):
        jax.block_until_ready(call())
    timing = time_calls(call, seconds)
    sums = jax.device_get(carry["record"]["sums"])
    row.update(seconds_per_step=timing["seconds"], spread=timing["spread"],
               steps_per_window=timing["calls_per_window"],
               images_per_s=batch / timing["seconds"],
               flops_per_s=row["flops"] / timing["seconds"],
               loss_finite=bool(all(np.isfinite(v) for v in sums.values())),
               memory=device_memory())
    return row


def pick_batches(row6: dict, limit: int | None, cap: int) -> list[int]:
    """Largest-batch candidates, largest first, whose XLA buffers (linear in the batch from
    the batch-6 program: arguments fixed, the rest per image) fit 85 % of the device."""
    mem = row6.get("xla_bytes") or {}
    if not mem or not limit:
        return [b for b in MAX_BATCHES if b <= cap][-1:]
    fixed = mem["argument"]
    per_image = (mem["total"] - fixed) / row6["batch"]
    fits = [b for b in MAX_BATCHES if b <= cap and fixed + b * per_image <= 0.85 * limit]
    return sorted(fits, reverse=True)[:3]


def step_step(args) -> dict:
    """bf16 (with the matrix rate) or float32: the step at batch 6 and at the largest batch
    that fits; rows are added to an existing step.json (bf16 runs first)."""
    clock = Clock(args.budget)
    record = read(args.out, "step") if args.append else {}
    record.setdefault("rows", [])
    record.setdefault("errors", [])
    base = tiny_batch() if args.tiny else 6
    seconds = 0.3 if args.tiny else 2.0
    if args.dtype == "bfloat16":
        record["matmul"] = matmul_rate(256 if args.tiny else 8192, seconds)
        write(args.out, "step", record)
    row6 = measure_step(args.dtype, base, args.tiny, seconds)
    record["rows"].append(row6)
    write(args.out, "step", record)
    limit = device_memory().get("bytes_limit")
    if args.tiny:  # the larger batch's path once (bf16), to keep the dry run short
        candidates = [4] if args.dtype == "bfloat16" else []
    else:
        candidates = pick_batches(row6, limit, args.max_batch)
        if not candidates:
            record["errors"].append(f"{args.dtype}: no batch above {base} fits 85 % of the "
                                    "device by the batch-6 program's buffers")
    for batch in candidates:
        if clock.left() < (10 if args.tiny else 1.3 * row6["compile_s"] + 8):
            record["errors"].append(f"{args.dtype}: no time left for a larger batch")
            break
        try:
            row = measure_step(args.dtype, batch, args.tiny, seconds)
        except Exception as err:  # noqa: BLE001 - an OOM here means: try the next smaller
            if not is_oom(err):
                raise
            record["errors"].append(f"{args.dtype} batch {batch}: out of memory")
            continue
        row["largest"] = True
        record["rows"].append(row)
        break
    peak = record.get("matmul", {}).get("flops_per_s")
    for row in record["rows"]:
        row["mfu"] = row["flops_per_s"] / peak if peak else None
    ours = [r for r in record["rows"] if r["dtype"] == args.dtype]
    record["status"] = "ok" if all(r["loss_finite"] for r in record["rows"]) else "failed"
    record["line"] = "; ".join(
        f"{r['dtype']} b{r['batch']}: {r['images_per_s']:.1f} img/s, "
        f"{1e3 * r['seconds_per_step']:.1f} ms, MFU {_pct(r['mfu'])}" for r in ours)
    return record


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


# ---------------------------------------------------------------------------------------------
# cli: the same step through `python -m pconv_jax.train`, fed from JPEG and mask folders
# ---------------------------------------------------------------------------------------------


def cli_step(args) -> dict:
    """The train CLI on the paper config (bf16, batch 6) reading a JPEG folder and a mask
    folder made here: its logged images/s (median past the first two log intervals) against
    the bare step's."""
    from benchmarks.bench import photo_folders
    from pconv_jax import config as config_lib

    count = 8 if args.tiny else 48
    images, masks = photo_folders(os.path.join(args.work, f"data{count}"), count, count)
    base = tiny_batch() if args.tiny else 6
    bare = next((r for r in read(args.out, "step").get("rows", [])
                 if r["dtype"] == "bfloat16" and r["batch"] == base), None)
    step_s = bare["seconds_per_step"] if bare else 0.02
    log_every = max(5, round(0.5 / step_s)) if not args.tiny else 2  # ~0.5 s per log line
    steps = log_every * (6 if args.tiny else 8)
    workdir = os.path.join(args.work, "cli_run")
    if os.path.isdir(workdir):
        import shutil

        shutil.rmtree(workdir)
    cmd = [sys.executable, "-m", "pconv_jax.train", "--config", PAPER_CONFIG,
           "--workdir", workdir, f"--config.data.source={images}",
           f"--config.data.masks={masks}", "--config.num_devices=1",
           f"--config.train.batch_size={base}", f"--config.train.steps={steps}",
           f"--config.train.log_every={log_every}", "--config.train.image_every=1000000000",
           "--config.checkpoint.every_steps=1000000000",
           *(config_lib.as_flags(config_lib.tiny_overrides()) if args.tiny else [])]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              timeout=max(10.0, args.budget - 5))
        returncode, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        returncode, output = None, str(err.stdout or "") + str(err.stderr or "")
    record = {"command": " ".join(cmd), "returncode": returncode, "workdir": workdir,
              "seconds": time.monotonic() - start, "log_every": log_every, "steps": steps,
              "data_workers": _workers()}
    logged = []
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            logged = [json.loads(ln)["images_per_s"] for ln in f if "images_per_s" in ln]
    record["logged_images_per_s"] = logged
    tail = " | ".join(output.strip().splitlines()[-3:])[-300:]
    if len(logged) < 3:
        record.update(status="failed", line=f"train CLI exit {returncode}, {len(logged)} log "
                                            f"lines: {tail}")
        return record
    cli = statistics.median(logged[2:])  # the first interval compiles, the second warms up
    record.update(images_per_s=cli, bare_images_per_s=bare["images_per_s"] if bare else None,
                  ratio=cli / bare["images_per_s"] if bare else None,
                  status="ok" if returncode == 0 else "failed")
    record["line"] = (f"bf16 b{base}: {cli:.1f} img/s logged by the CLI"
                      + (f", {record['ratio']:.3f} of the bare step" if bare else
                         " (no bare step to compare)") + f", {record['data_workers']} workers"
                      + ("" if returncode == 0 else f"; but the CLI exit {returncode}: {tail}"))
    return record


def _workers() -> int:
    from pconv_jax.data import default_workers

    return default_workers()


# ---------------------------------------------------------------------------------------------
# forward: the 512 px network alone, and the exported files
# ---------------------------------------------------------------------------------------------


def forward_step(args) -> dict:
    """Eval-mode forward of the paper's network at batch 1 and 16, bf16 then float32; then the
    export CLI's files from the CLI step's run (when pconv_jax.export exists)."""
    import jax
    import numpy as np
    from flax import nnx

    from pconv_jax import config as config_lib
    from pconv_jax.masks import irregular_mask
    from pconv_jax.model import PConvUNet

    clock = Clock(args.budget)
    record = {"rows": [], "errors": []}
    rng = np.random.default_rng(0)
    for dtype in ("bfloat16", "float32"):
        # the network as a run restores it
        model_cfg = config_lib.unet_config(paper_config(dtype, 1, args.tiny))
        size = model_cfg.image_size
        model = PConvUNet(model_cfg, rngs=nnx.Rngs(0))
        model.eval()
        graphdef, state = nnx.split(model)
        forward = jax.jit(lambda state, x, m, g=graphdef: nnx.merge(g, state)(x, m)[0])
        for batch in (1, 16):
            if clock.left() < (5 if args.tiny else 12):
                record["errors"].append(f"{dtype} batch {batch}: no time left")
                continue
            image = jax.device_put(rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32))
            mask = jax.device_put(np.stack([irregular_mask(size, rng, 0.3) for _ in
                                            range(batch)])[..., None].astype(np.float32))
            start = time.perf_counter()
            lowered = forward.lower(state, image, mask)
            compiled = lowered.compile()
            row = {"dtype": dtype, "batch": batch, "compile_s": time.perf_counter() - start,
                   **step_flops(lowered, compiled)}
            timing = time_calls(lambda c=compiled, s=state, x=image, m=mask: c(s, x, m),
                                0.3 if args.tiny else 1.0)
            row.update(seconds=timing["seconds"], images_per_s=batch / timing["seconds"],
                       flops_per_s=row["flops"] / timing["seconds"])
            record["rows"].append(row)
            write(args.out, "forward", record)
    record["export"] = export_files(args, clock)
    record["status"] = "ok" if record["rows"] else "failed"
    rows = "; ".join(f"{r['dtype']} b{r['batch']} {r['images_per_s']:.1f} img/s"
                     for r in record["rows"])
    record["line"] = f"{rows}; export: {record['export']['line']}"
    return record


def export_files(args, clock: Clock) -> dict:
    """`python -m pconv_jax.export` of the CLI step's run to .stablehlo and .onnx: each file's
    size, and the StableHLO artifact called at batch 1 and 16 (valid pixels must come back
    bit-identical)."""
    if importlib.util.find_spec("pconv_jax.export") is None:
        return {"status": "skipped", "line": "skipped: pconv_jax.export is not in this tree "
                                             "(issue #21)"}
    workdir = read(args.out, "cli").get("workdir")
    if not workdir or not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return {"status": "skipped", "line": "skipped: the CLI step left no checkpoint"}
    if clock.left() < 20:
        return {"status": "skipped", "line": f"skipped: {clock.left():.0f} s left of the step"}
    result = {"files": {}}
    for suffix in ("stablehlo", "onnx"):
        path = os.path.join(args.work, f"model.{suffix}")
        cmd = [sys.executable, "-m", "pconv_jax.export", "--workdir", workdir, "--out", path]
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                                  timeout=max(5.0, clock.left() - 5))
            ok = proc.returncode == 0 and os.path.exists(path)
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
        except subprocess.TimeoutExpired:
            ok, tail = False, ["timed out"]
        result["files"][suffix] = {"ok": ok, "seconds": time.monotonic() - start,
                                   "bytes": os.path.getsize(path) if ok else None,
                                   "message": tail[0][-300:]}
    hlo = result["files"]["stablehlo"]
    if hlo["ok"]:
        try:
            hlo["calls"] = _call_stablehlo(os.path.join(args.work, "model.stablehlo"),
                                           32 if args.tiny else 512)
            if not all(c["valid_pixels_identical"] and c["finite"] for c in hlo["calls"]):
                hlo["ok"], hlo["message"] = False, "valid pixels changed or non-finite output"
        except Exception as err:  # noqa: BLE001 - an artifact that does not run is a finding
            hlo["ok"], hlo["message"] = False, f"call failed: {type(err).__name__}: {err}"[:300]
    result["status"] = "ok" if all(f["ok"] for f in result["files"].values()) else "failed"
    result["line"] = ", ".join(f"{s} {'ok' if f['ok'] else 'FAILED'}"
                               for s, f in result["files"].items())
    return result


def _call_stablehlo(path: str, size: int) -> list[dict]:
    """Images/s of the deserialised artifact at batch 1 and 16; valid pixels checked."""
    import jax
    import numpy as np

    with open(path, "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    rng = np.random.default_rng(1)
    rows = []
    for batch in (1, 16):
        image = rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
        mask = (rng.uniform(size=(batch, size, size, 1)) > 0.3).astype(np.float32)
        out = np.asarray(exported.call(image, mask))
        valid = np.broadcast_to(mask > 0, out.shape)
        timing = time_calls(lambda x=image, m=mask: exported.call(x, m), 1.0, min_windows=3)
        rows.append({"batch": batch, "images_per_s": batch / timing["seconds"],
                     "valid_pixels_identical": bool(np.array_equal(out[valid], image[valid])),
                     "finite": bool(np.isfinite(out).all())})
    return rows


# ---------------------------------------------------------------------------------------------
# summary: the table, each figure against its target
# ---------------------------------------------------------------------------------------------


def verdict(value: float | None, target: float, at_least: bool, tiny: bool) -> str:
    """'met' / 'NOT met' / '-' (no value) / 'n/a (tiny)'."""
    if tiny:
        return "n/a (tiny)"
    if value is None:
        return "-"
    return "met" if (value >= target if at_least else value <= target) else "NOT met"


def summary_step(args) -> dict:
    """Reads every step's JSON and the shell's step times; prints the table."""
    steps = {}
    path = os.path.join(args.work, "steps.tsv")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                name, status, seconds = line.rstrip("\n").split("\t")
                steps[name] = {"status": status, "seconds": float(seconds)}
    total = sum(s["seconds"] for s in steps.values())
    env, tests, step, cli = (read(args.out, n) for n in ("env", "tests", "step", "cli"))
    forward, torch_rec = read(args.out, "forward"), read(args.out, "torch")
    tiny = args.tiny
    table = [("what", "value", "target", "verdict")]
    device = f"{env.get('platform_name', '?')}:{env.get('device_kind', '?')}"
    table.append(("device", f"{device}, jax {env.get('versions', {}).get('jax')}", "", ""))
    table.append(("whole check", f"{total:.0f} s", "<= 480 s",
                  verdict(total, TARGETS["total_s"], False, tiny)))
    if tests:
        table.append(("fast tests", tests.get("line", ""), "all pass",
                      "met" if tests.get("status") == "ok" else "NOT met"))
    matmul = step.get("matmul", {})
    if matmul:
        table.append((f"bf16 matmul {matmul['n']}^3", f"{matmul['flops_per_s'] / 1e12:.1f} "
                      "TFLOP/s", "", ""))
    for r in step.get("rows", []):
        mem = r.get("memory", {}).get("peak_bytes_in_use") or r["xla_bytes"].get("total")
        value = (f"{r['images_per_s']:.1f} img/s, {1e3 * r['seconds_per_step']:.1f} ms, "
                 f"{(mem or 0) / 2**30:.1f} GiB, MFU {_pct(r.get('mfu'))}")
        is_bf16 = r["dtype"] == "bfloat16"
        table.append((f"train step {r['dtype']} b{r['batch']}", value,
                      ">= 40 % MFU" if is_bf16 else "",
                      verdict(r.get("mfu"), TARGETS["mfu"], True, tiny) if is_bf16 else ""))
    if cli:
        table.append(("train CLI / bare step", cli.get("line", ""), ">= 0.95",
                      verdict(cli.get("ratio"), TARGETS["cli_ratio"], True, tiny)))
    for r in forward.get("rows", []):
        table.append((f"forward {r['dtype']} b{r['batch']}",
                      f"{r['images_per_s']:.1f} img/s, {1e3 * r['seconds']:.1f} ms", "", ""))
    if forward.get("export"):
        table.append(("export", forward["export"]["line"], "", ""))
    ours = {r["batch"]: r for r in step.get("rows", []) if r["dtype"] == "bfloat16"}
    ratios = []
    for r in torch_rec.get("rows", []):
        mine = ours.get(r["batch"])
        ratio = mine["images_per_s"] / r["images_per_s"] if mine else None
        r["ours_over_torch"] = ratio
        ratios.append(ratio)
        table.append((f"PyTorch bf16 b{r['batch']} ({r['mode']})",
                      f"{r['images_per_s']:.1f} img/s; ours/PyTorch "
                      + ("-" if ratio is None else f"{ratio:.2f}x"), ">= 1.5x",
                      verdict(ratio, TARGETS["torch_ratio"], True, tiny)))
    if torch_rec.get("status") == "skipped" or not torch_rec:
        table.append(("PyTorch", torch_rec.get("line", "no result"), ">= 1.5x", "-"))
    for problem in env.get("version_problems", []):
        table.append(("note: env", f"outside pyproject's range: {problem}", "", ""))
    for name, rec in (("step", step), ("forward", forward), ("torch", torch_rec)):
        for error in rec.get("errors", []):
            table.append((f"note: {name}", error[:120], "", ""))
    for name, s in steps.items():
        if s["status"] not in ("ok", "skipped"):
            table.append((f"step {name}", f"{s['status']} after {s['seconds']:.0f} s", "", ""))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    failed = [n for n, s in steps.items() if s["status"] not in ("ok", "skipped")]
    return {"steps": steps, "total_s": total, "table": lines, "targets": TARGETS, "tiny": tiny,
            "torch_ratios": ratios, "status": "failed" if failed else "ok",
            "line": f"{len(steps)} steps in {total:.0f} s"
                    + (f"; not ok: {', '.join(failed)}" if failed else "")}


STEPS = {"env": env_step, "tests": tests_step, "step": step_step, "cli": cli_step,
         "forward": forward_step, "summary": summary_step}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(STEPS))
    parser.add_argument("--out", required=True, help="the results folder ($OUT)")
    parser.add_argument("--work", default=None, help="scratch folder (default: --out)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds for this step")
    parser.add_argument("--tiny", action="store_true", help="the CPU dry run's sizes")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--append", action="store_true", help="step: add to step.json")
    parser.add_argument("--max-batch", type=int, default=128, help="step: largest batch tried")
    parser.add_argument("--bundle", default="", help="env: the bundle folder")
    parser.add_argument("--tests-k", default=None, help="tests: a pytest -k selection")
    args = parser.parse_args(argv)
    args.work = args.work or args.out
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    out_name = "step" if args.name == "step" else args.name
    try:
        record = STEPS[args.name](args)
    except Exception as err:  # noqa: BLE001 - the step's failure is its result
        traceback.print_exc()
        record = read(args.out, out_name) if args.name in ("step", "forward") else {}
        record.update(status="failed", line=f"{type(err).__name__}: {str(err)[:300]}")
    write(args.out, out_name, record)
    print(record.get("line", ""), flush=True)
    if args.name == "summary":  # the table last
        print("\n".join(record.get("table", [])), flush=True)
    return 0 if record.get("status") in ("ok", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
