"""The offline GPU check (benchmarks/gpu_check) dry-run on the CPU, so it cannot rot before a
GPU is at hand: the bundle resolves on the index, covers what pconv-jax needs, and keeps within
what may travel; run.sh --tiny runs every step and writes every record."""

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from benchmarks.gpu_check import bundle, check

from tests import reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_SH = os.path.join(REPO, "benchmarks", "gpu_check", "run.sh")
TORCH_NET = os.path.join(REPO, "benchmarks", "torch_pconv.py")  # issue #19's network

# A stand-in for issue #19's PConvUNetTorch (same constructor and forward signature) where
# benchmarks/torch_pconv.py is not in the tree: the PyTorch step's mechanics, not its figures.
STUB_NET = '''
import torch
from torch import nn


class PConvUNetTorch(nn.Module):
    def __init__(self, layer_size: int = 7, input_channels: int = 3):
        super().__init__()
        self.down = nn.Conv2d(input_channels, 8, 3, stride=2, padding=1)
        self.up = nn.Conv2d(8 + input_channels, input_channels, 3, padding=1)

    def forward(self, image, mask):
        h = torch.relu(self.down(image * mask))
        h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
        return self.up(torch.cat([h, image * mask], 1)), mask
'''


def torch_net(tmp_path) -> str:
    """--net for the PyTorch step: issue #19's file when present, else the stub."""
    if os.path.exists(TORCH_NET):
        return "benchmarks.torch_pconv:PConvUNetTorch"
    path = tmp_path / "stub_torch_pconv.py"
    path.write_text(STUB_NET)
    return f"{path}:PConvUNetTorch"


def probe_wheel(folder) -> str:
    """A minimal pure-Python wheel (gpucheckprobe 1.0): run.sh must install it into its
    private site folder and the env step must find it there."""
    files = {"gpucheckprobe/__init__.py": b"VALUE = 1\n",
             "gpucheckprobe-1.0.dist-info/METADATA":
                 b"Metadata-Version: 2.1\nName: gpucheckprobe\nVersion: 1.0\n",
             "gpucheckprobe-1.0.dist-info/WHEEL":
                 b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                 b"Tag: py3-none-any\n"}
    def digest(data: bytes) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{name},sha256={digest(data)},{len(data)}\n"
                     for name, data in files.items())
    record += "gpucheckprobe-1.0.dist-info/RECORD,,\n"
    path = os.path.join(folder, "gpucheckprobe-1.0-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as whl:
        for name, data in files.items():
            whl.writestr(name, data)
        whl.writestr("gpucheckprobe-1.0.dist-info/RECORD", record)
    return path


def test_every_dependency_is_on_the_host_bundled_or_left_out_with_a_reason():
    """A new pconv-jax dependency must be decided for the GPU host: bundled or not shipped."""
    host = bundle.host_packages(os.path.join(bundle.HERE, "host_packages.txt"))
    assert bundle.check_coverage(host, os.path.join(REPO, "pyproject.toml")) == []
    constraints = os.path.join(REPO, "constraints.txt")
    pins = bundle.pins(constraints)
    assert all(bundle.canonical(n) in pins for n in bundle.BUNDLE)
    with open(constraints) as f:  # the host runs Python 3.12: of two pins, the 3.12 one
        for line in f:
            if 'python_version >= "3.12"' in line:
                name, version = line.split(";")[0].strip().split("==")
                assert pins[bundle.canonical(name)] == version


def test_a_dependency_nobody_provides_is_named(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["numpy>=2", "grain", "leftpad>=1"]\n')
    assert bundle.check_coverage({"numpy"}, str(pyproject)) == [
        "pconv-jax needs leftpad: neither on the host, in BUNDLE nor in NOT_SHIPPED"]
    assert bundle.check_coverage({"numpy", "grain", "leftpad"}, str(pyproject)) == [
        "grain is on the host already: do not bundle it"]


def test_closure_names_a_requirement_nobody_provides():
    wheels = [{"name": "grain", "requires_dist": ["numpy", "portpicker",
                                                  'pyarrow; extra == "parquet"',
                                                  'pywin32; sys_platform == "win32"']},
              {"name": "portpicker", "requires_dist": ["psutil"]}]
    assert bundle.check_closure(wheels, {"numpy", "psutil"}) == []
    problems = bundle.check_closure(wheels, {"numpy"})
    assert problems == ["portpicker needs psutil, which is neither on the host nor in the bundle"]


def test_size_check_fails_over_64_mib():
    assert "<= 64 MiB" in bundle.check_size(40 * 2**20, 20 * 2**20)
    with pytest.raises(bundle.BundleError, match="over the 64 MiB"):
        bundle.check_size(40 * 2**20, 25 * 2**20)


def test_largest_batch_candidates_fit_the_device_by_the_batch_6_program():
    """Arguments (parameters, optimizer state) fixed, the rest linear in the batch: with 1 GiB
    fixed and 2 GiB per image, 85 % of 100 GiB holds 42 images, so 32, 24, 16 are tried."""
    gib = 2**30
    row6 = {"batch": 6, "xla_bytes": {"argument": gib, "total": gib + 6 * 2 * gib}}
    assert check.pick_batches(row6, 100 * gib, cap=128) == [32, 24, 16]
    assert check.pick_batches(row6, 100 * gib, cap=20) == [16, 12]
    assert check.pick_batches(row6, 10 * gib, cap=128) == []  # not even 12 fits
    assert check.pick_batches({"batch": 6, "xla_bytes": {}}, None, cap=64) == [64]  # unknown


@pytest.mark.slow
def test_bundle_dry_run_resolves_every_wheel_for_the_host():
    """make gpu-bundle's resolution on the index (no download): a wheel for CPython 3.12
    manylinux x86-64 at the pinned version for every bundled package, within 64 MiB."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check.bundle", "--dry-run"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    if proc.returncode == 2:
        pytest.skip(f"the package index cannot be reached here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr
    pins = bundle.pins(os.path.join(REPO, "constraints.txt"))
    for name in bundle.BUNDLE:
        wheel = next(ln.strip() for ln in proc.stdout.splitlines()
                     if bundle.canonical(ln.strip().split("-")[0]) == bundle.canonical(name))
        assert wheel.split("-")[1] == pins[bundle.canonical(name)]
        assert wheel.endswith("-py3-none-any.whl") or (
            "-cp312-cp312-manylinux" in wheel and wheel.endswith("x86_64.whl")), wheel
    assert "would fetch 5 wheels" in proc.stdout and "<= 64 MiB" in proc.stdout


@pytest.mark.slow
def test_run_sh_tiny_dry_run_writes_every_record(tmp_path):
    """run.sh --tiny on the CPU: each step ok (the PyTorch one skipped, with its reason, where
    PCONV_TORCH_PYTHON is unset), OUT within the 8 files that travel back from a lent GPU,
    and each record's figures consistent with one another."""
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    probe_wheel(bundle_dir)
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "GPU_CHECK_WORK": str(work),
           "GPU_CHECK_BUNDLE": str(bundle_dir), "GPU_CHECK_TORCH_NET": torch_net(tmp_path),
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([RUN_SH, "--tiny"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + (out / "log.txt").read_text()[-3000:]
    assert sorted(os.listdir(out)) == sorted(
        ["log.txt"] + [f"{n}.json" for n in
                       ("env", "tests", "step", "cli", "forward", "torch", "summary")])
    records = {p[:-5]: json.loads((out / p).read_text()) for p in os.listdir(out)
               if p.endswith(".json")}

    env_rec = records["env"]
    assert str(env_rec["bundle"]["gpucheckprobe"]).startswith(str(work / "site"))
    assert env_rec["pconv_jax"] == os.path.join(REPO, "src", "pconv_jax")

    tests = records["tests"]
    assert tests["status"] == "ok" and tests["passed"] >= 3 and tests["failures"] == 0

    step = records["step"]
    matmul = step["matmul"]
    assert matmul["flops_per_s"] == pytest.approx(2 * matmul["n"] ** 3 / matmul["seconds"])
    assert {(r["dtype"], r["batch"]) for r in step["rows"]} == {
        ("bfloat16", 2), ("bfloat16", 4), ("float32", 2)}
    for r in step["rows"]:
        assert r["loss_finite"] and r["flops"] > 0
        assert r["images_per_s"] == pytest.approx(r["batch"] / r["seconds_per_step"])
        assert r["mfu"] == pytest.approx(r["flops"] / r["seconds_per_step"]
                                         / matmul["flops_per_s"])
        # XLA's count within 25 % of convolutions + dots counted from the program's text
        assert r["flops"] == pytest.approx(sum(r["flops_conv_dot_by_dtype"].values()), rel=0.25)
    by_batch = {(r["dtype"], r["batch"]): r["flops"] for r in step["rows"]}
    assert by_batch[("bfloat16", 4)] == pytest.approx(2 * by_batch[("bfloat16", 2)], rel=0.05)

    cli = records["cli"]
    assert cli["status"] == "ok" and len(cli["logged_images_per_s"]) == cli["steps"] // \
        cli["log_every"]
    bare = next(r for r in step["rows"] if r["dtype"] == "bfloat16" and r["batch"] == 2)
    assert cli["ratio"] == pytest.approx(cli["images_per_s"] / bare["images_per_s"])

    forward = records["forward"]
    assert {(r["dtype"], r["batch"]) for r in forward["rows"]} == {
        (d, b) for d in ("bfloat16", "float32") for b in (1, 16)}
    assert forward["export"]["status"] in ("ok", "skipped")

    torch_rec = records["torch"]
    if os.environ.get("PCONV_TORCH_PYTHON"):
        assert torch_rec["status"] == "ok" and torch_rec["rows"][0]["loss_finite"]
    else:
        assert torch_rec["status"] == "skipped" and "PCONV_TORCH_PYTHON" in torch_rec["line"]
        print(f"the PyTorch step was skipped: {torch_rec['line']}")

    summary = records["summary"]
    assert summary["status"] == "ok"
    table = proc.stdout[proc.stdout.index("| what"):]
    for row in ("fast tests", "train step bfloat16 b2", "train CLI / bare step",
                "forward float32 b16", "PyTorch"):
        assert row in table
    assert "n/a (tiny)" in table  # targets are judged on a GPU only


def test_torch_step_with_a_torch_interpreter(tmp_path):
    """The PyTorch step alone in PCONV_TORCH_PYTHON (issue #19's .venv-torch): one eager
    training step row with a finite loss; a missing network is a skip that names it."""
    python = os.environ.get("PCONV_TORCH_PYTHON")
    if not python:
        pytest.skip("PCONV_TORCH_PYTHON is not set (an interpreter with torch, e.g. "
                    ".venv-torch from make): the PyTorch step cannot run here")
    cmd = [python, "-m", "benchmarks.gpu_check.torch_step", "--tiny", "--out", str(tmp_path)]
    proc = subprocess.run([*cmd, "--net", torch_net(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "torch.json").read_text())
    row = record["rows"][0]
    assert row["loss_finite"] and row["images_per_s"] == pytest.approx(
        row["batch"] / row["seconds_per_step"])
    proc = subprocess.run([*cmd, "--net", "no_such_module:Net"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0
    record = json.loads((tmp_path / "torch.json").read_text())
    assert record["status"] == "skipped" and "no_such_module" in record["line"]


# Run in PCONV_TORCH_PYTHON: the PyTorch step's loss on fixed inputs, with the VGG features of
# I_out, I_comp and I_gt it used, saved for the NumPy reference.
TORCH_LOSS_SCRIPT = """
import sys
import numpy as np
import torch
from benchmarks.gpu_check.torch_step import VGG16Pools, loss_terms

torch.manual_seed(0)
out, gt = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
mask = (torch.rand(2, 1, 16, 16) > 0.4).float().expand(2, 3, 16, 16)
vgg = VGG16Pools().eval()
with torch.no_grad():
    terms = loss_terms(out, gt, mask, vgg)
    comp = mask * gt + (1 - mask) * out
    feats = {name: [p.permute(0, 2, 3, 1).numpy() for p in vgg(x)]
             for name, x in (("out", out), ("comp", comp), ("gt", gt))}
nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()
np.savez(sys.argv[1], out=nhwc(out), gt=nhwc(gt), mask=nhwc(mask[:, :1]),
         **{f"term_{k}": float(v) for k, v in terms.items()},
         **{f"{name}_{i}": f for name, fs in feats.items() for i, f in enumerate(fs)})
"""


def test_torch_step_loss_is_the_papers_six_terms(tmp_path):
    """The PyTorch step trains on the same loss as ours: its six terms against the NumPy
    reference's formulas (tests/reference.py) on the same images and VGG features."""
    python = os.environ.get("PCONV_TORCH_PYTHON")
    if not python:
        pytest.skip("PCONV_TORCH_PYTHON is not set (an interpreter with torch, e.g. "
                    ".venv-torch from make): the PyTorch step's loss cannot be computed here")
    path = tmp_path / "torch_loss.npz"
    proc = subprocess.run([python, "-c", TORCH_LOSS_SCRIPT, str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = np.load(path)
    images = {"out": saved["out"], "comp": None, "gt": saved["gt"]}
    m = saved["mask"]
    images["comp"] = m * saved["gt"] + (1 - m) * saved["out"]

    def features(x):  # the torch VGG's features of whichever of the three images x is
        name = next(n for n, im in images.items() if np.allclose(im, x, atol=1e-6))
        return [saved[f"{name}_{i}"].astype(np.float64) for i in range(3)]

    expected = reference.loss_terms(saved["out"], saved["gt"], m, features)
    for term, value in expected.items():
        assert float(saved[f"term_{term}"]) == pytest.approx(value, rel=1e-4, abs=1e-7), term
