"""Installing on an accelerator: the `cuda12`, `cuda13` and `tpu` extras and `make install ACCEL=`.

The resolution tests ask pip for a dry run with a JSON report: nothing is installed. pip reads
wheel metadata from the index (PEP 658) when it serves it; where it does not, pip would download
every wheel (~3.5 GB for `cuda12`), so these tests add `--use-feature=fast-deps`, which reads
each wheel's METADATA by HTTP range requests instead (~30 MB in all, 10-15 s per extra).
They need the package index and skip, saying so, when it cannot be reached.
"""

import functools
import glob
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"

# Each extra of pconv-jax and the JAX plugin packages it must bring. JAX's own extras pin the
# CUDA plugin (and its PJRT package) to exactly the jax version; libtpu to a `0.0.N.*` series.
ACCEL_PACKAGES = {
    "cuda12": ("jax-cuda12-plugin", "jax-cuda12-pjrt"),
    "cuda13": ("jax-cuda13-plugin", "jax-cuda13-pjrt"),
    "tpu": ("libtpu",),
}
PIN_LIKE_JAX = {"jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt"}
# The two Python lines constraints.txt pins (jax 0.10 for 3.11, jax 0.12 for 3.12).
PYTHON_LINES = ("3.11", "3.12")
PIP_TIMEOUT_S = 120


def constrained_version(name: str, python_version: str) -> str:
    """The `==` version constraints.txt pins `name` to for Python `python_version`."""
    env = {"python_version": python_version, "python_full_version": f"{python_version}.0"}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if canonicalize_name(req.name) != canonicalize_name(name):
            continue
        if req.marker is None or req.marker.evaluate(env):
            (spec,) = req.specifier
            assert spec.operator == "==", line
            return spec.version
    raise AssertionError(f"constraints.txt pins no {name} for Python {python_version}")


@functools.cache
def python_for(version: str) -> str | None:
    """An interpreter of Python `version` (this one, pyenv's, or one on PATH), or None."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"))
    candidates.append(shutil.which(f"python{version}") or "")
    for exe in filter(None, candidates):
        probe = subprocess.run(
            [exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2], sys.executable)"],
            capture_output=True, text=True, timeout=30,
        )
        if probe.returncode == 0 and probe.stdout.split()[:1] == [version]:
            return probe.stdout.split(maxsplit=1)[1].strip()
    return None


@functools.cache
def index_unreachable() -> str | None:
    """Why the package index pip uses cannot be reached within 5 s, or None if it can."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    url = f"{index}/jax/"
    context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5,
                                    context=context):
            return None
    except Exception as err:  # any failure means "no index here"
        return f"package index unreachable ({url}: {err}); these tests resolve against it"


@functools.cache
def pip_has_fast_deps() -> bool:
    """Whether this pip accepts `--use-feature=fast-deps` (metadata by HTTP range requests)."""
    cmd = [sys.executable, "-m", "pip", "install", "--use-feature=fast-deps", "--help"]
    return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0


def dry_run_report(extra: str, python: str) -> dict:
    """pip's resolution of '.[extra]' under constraints.txt for `python`, installing nothing."""
    cmd = [sys.executable, "-m", "pip", "--python", python, "install", "--dry-run",
           "--ignore-installed", "--quiet", "--report", "-", "-c", str(CONSTRAINTS), f".[{extra}]"]
    if pip_has_fast_deps():
        cmd.insert(cmd.index("--dry-run"), "--use-feature=fast-deps")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pip took over {PIP_TIMEOUT_S} s to resolve '.[{extra}]'")
    assert proc.returncode == 0, f"pip could not resolve '.[{extra}]':\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("python_line", PYTHON_LINES)
@pytest.mark.parametrize("extra", sorted(ACCEL_PACKAGES))
def test_accelerator_extra_resolves_to_constrained_jax_and_its_plugin(extra, python_line):
    """pip resolves '.[extra]' under constraints.txt without conflict, to the pinned jax/jaxlib
    and the extra's plugin packages (CUDA plugins at exactly the pinned jax version)."""
    if reason := index_unreachable():
        pytest.skip(reason)
    python = python_for(python_line)
    if python is None:
        pytest.skip(f"no Python {python_line} interpreter on this machine")

    report = dry_run_report(extra, python)
    assert report["environment"]["python_version"] == python_line
    resolved = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
                for item in report["install"]}
    jax_pin = constrained_version("jax", python_line)
    assert resolved.get("jax") == jax_pin
    assert resolved.get("jaxlib") == constrained_version("jaxlib", python_line)
    for package in ACCEL_PACKAGES[extra]:
        assert package in resolved, f"'.[{extra}]' did not bring {package}: {sorted(resolved)}"
        if package in PIN_LIKE_JAX:
            assert resolved[package] == jax_pin, (package, resolved[package])
    others = {p for e, ps in ACCEL_PACKAGES.items() if e != extra for p in ps}
    assert not others & resolved.keys(), f"'.[{extra}]' also brought {others & resolved.keys()}"


def make_install_dry_run(*args: str, target: str = "install") -> subprocess.CompletedProcess:
    """`make -n -B TARGET ARGS` in the repository: the commands make would run, none run."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # under `make test` the environment carries the outer make's flags (MAKEFLAGS, MAKELEVEL):
    # without them, and without directory messages, this make speaks only for itself
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    return subprocess.run(["make", "--no-print-directory", "-n", "-B", target, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("accel", ["bogus", "cuda12 tpu", "CUDA12"])
def test_make_install_refuses_unknown_accel_in_one_line_listing_valid_ones(accel):
    """`make install ACCEL=<unknown>` fails before doing anything, with a single error line that
    names the bad value and lists cuda12, cuda13 and tpu."""
    proc = make_install_dry_run(f"ACCEL={accel}")
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"ACCEL={accel}" in lines[0] and "cuda12 cuda13 tpu" in lines[0], lines[0]


@pytest.mark.parametrize("accel", sorted(ACCEL_PACKAGES))
def test_make_install_accel_installs_dev_and_accel_extras_with_own_stamp(accel):
    """`make install ACCEL=x` installs '.[dev,x]' under constraints.txt, removes the other
    accelerators' plugins, and records its own stamp (so switching ACCEL re-installs)."""
    proc = make_install_dry_run(f"ACCEL={accel}")
    assert proc.returncode == 0, proc.stderr
    assert f"-c constraints.txt -e '.[dev,{accel}]'" in proc.stdout
    assert f"touch .venv/.installed-{accel} .venv/.installed" in proc.stdout
    uninstall = next(line for line in proc.stdout.splitlines() if " pip uninstall " in line)
    others = {p for e, ps in ACCEL_PACKAGES.items() if e != accel for p in ps}
    assert set(uninstall.split()) >= others
    assert not set(ACCEL_PACKAGES[accel]) & set(uninstall.split())


def test_make_install_default_is_the_cpu_build():
    """Plain `make install` (no ACCEL) installs '.[dev]' only (CPU jax), with the usual stamp."""
    proc = make_install_dry_run()
    assert proc.returncode == 0, proc.stderr
    assert "-c constraints.txt -e '.[dev]'" in proc.stdout
    assert "uninstall" not in proc.stdout
    assert proc.stdout.rstrip().endswith("touch .venv/.installed")


def test_make_app_serves_the_workdir_and_trains_the_demo_when_it_is_missing(tmp_path):
    """`make app` installs (with the app extra, through dev), trains the demo run when it
    holds no checkpoints, then starts `python -m pconv_jax.app` on it; another workdir
    without checkpoints is one error line, and nothing is trained."""
    other = make_install_dry_run(f"APP_WORKDIR={tmp_path / 'other'}", target="app")
    assert other.returncode != 0
    assert f"error: {tmp_path / 'other'} holds no checkpoints" in other.stderr, other.stderr
    assert "pconv_jax.train" not in other.stdout and "pconv_jax.app" not in other.stdout
    proc = make_install_dry_run(f"DEMO_WORKDIR={tmp_path / 'none'}", target="app")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    app_line = next(i for i, line in enumerate(lines) if "-m pconv_jax.app" in line)
    assert f"--workdir {tmp_path / 'none'}" in lines[app_line]
    assert any("-m pconv_jax.train" in line and "demo.py" in line and
               f"--workdir {tmp_path / 'none'}" in line for line in lines[:app_line])
    assert any("-e '.[dev]'" in line for line in lines[:app_line])


@pytest.mark.slow
@pytest.mark.parametrize("python_line", PYTHON_LINES)
def test_export_extra_resolves_with_every_package_pinned(python_line):
    """'.[export]' (onnx, onnxruntime) resolves under constraints.txt for both Python lines,
    and every package it brings is pinned there: the extra moves no pin and adds no
    unpinned dependency."""
    if reason := index_unreachable():
        pytest.skip(reason)
    python = python_for(python_line)
    if python is None:
        pytest.skip(f"no Python {python_line} interpreter on this machine")
    report = dry_run_report("export", python)
    resolved = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
                for item in report["install"]}
    assert {"onnx", "onnxruntime"} <= resolved.keys(), sorted(resolved)
    for name, version in resolved.items():
        if name == "pconv-jax":
            continue
        assert version == constrained_version(name, python_line), (name, version)
