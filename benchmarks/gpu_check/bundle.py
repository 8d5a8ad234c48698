"""`make gpu-bundle`: the wheels an offline GPU host lacks for `benchmarks/gpu_check/run.sh`.

    python -m benchmarks.gpu_check.bundle [--dest .gpu-bundle] [--dry-run] [--tar FILE]

Downloads, on a machine that reaches PyPI, the Python 3.12 manylinux x86-64 wheels of the
packages in BUNDLE at their `constraints.txt` versions (nothing else: jax, flax, torch ... are
the host's), checks that every requirement of every bundled wheel is on the host
(host_packages.txt) or in the bundle, that every dependency of pconv-jax is one or the other
(or in NOT_SHIPPED, with the reason), and fails if the source tree (tracked and untracked, not
ignored files) and the bundle together exceed 64 MiB, what may travel to the host.
`--dry-run` resolves the same wheels on the index (pip's report) without downloading them;
the bundle's size is then the measured size below (BUNDLE_ESTIMATE). `--tar FILE` also writes
the source tree and the bundle as one tar file to copy to the host.
Exit status: 0 ok, 1 a check failed, 2 the package index could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LIMIT_BYTES = 64 * 2**20  # what may travel to the host with the source tree
# The bundle as downloaded on 2026-12-01 (5 wheels, 4.4 MiB), rounded up: the size a dry run
# counts, since pip's report gives no file sizes.
BUNDLE_ESTIMATE = 6 * 2**20

# What the check's paths import beyond the host's packages (name in constraints.txt: why).
BUNDLE = {
    "grain": "data.py's input pipeline (the train CLI, the tests)",
    "array_record": "grain's requirement on Linux",
    "portpicker": "grain's requirement",
    "ml_collections": "train.py's configuration (the train CLI, the tests)",
    "tensorboardX": "the train CLI's TensorBoard events, written as in any user's run",
}
# pconv-jax dependencies the host lacks that the check does not ship, and why.
NOT_SHIPPED = {
    "pypatchmatch": "the PatchMatch baseline of evaluate and compare, which the check does not "
                    "run; without it they leave PatchMatch out with one line",
    "tensorflow-datasets": "only tfds: sources import it (lazily, in data.TfdsImages); the check "
                           "reads image folders, and its requirement promise 2.3 has no wheel",
}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
# Markers of the host's interpreter, for constraints.txt lines and wheel requirements.
HOST_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3",
                "sys_platform": "linux", "platform_system": "Linux",
                "platform_machine": "x86_64", "implementation_name": "cpython",
                "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
NETWORK_ERRORS = ("Failed to establish a new connection", "Temporary failure in name resolution",
                  "Network is unreachable", "Could not fetch URL", "ConnectionError",
                  "Max retries exceeded")


class BundleError(RuntimeError):
    """A check that failed, with the message for the user."""


def canonical(name: str) -> str:
    """PyPI's normalised project name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def host_packages(path: str) -> set[str]:
    """The normalised names in a host package list (one a line, '#' comments)."""
    with open(path) as f:
        return {canonical(line.split("#")[0].strip()) for line in f
                if line.split("#")[0].strip()}


def pins(constraints: str) -> dict[str, str]:
    """{normalised name: version} of constraints.txt for the host's Python."""
    from packaging.requirements import Requirement

    found = {}
    with open(constraints) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if not line:
                continue
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(HOST_MARKERS):
                found[canonical(req.name)] = str(req.specifier).removeprefix("==")
    return found


def requirements(requires_dist: list[str]) -> set[str]:
    """Normalised names a wheel needs on the host (extras and other platforms left out)."""
    from packaging.requirements import Requirement

    names = set()
    for line in requires_dist or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(HOST_MARKERS):
            names.add(canonical(req.name))
    return names


def check_coverage(host: set[str], pyproject: str) -> list[str]:
    """Problems: a pconv-jax dependency neither on the host, bundled nor in NOT_SHIPPED; a
    bundled package the host already has."""
    from packaging.requirements import Requirement

    with open(pyproject, "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    bundled = {canonical(n) for n in BUNDLE}
    skipped = {canonical(n) for n in NOT_SHIPPED}
    problems = [f"pconv-jax needs {Requirement(d).name}: neither on the host, in BUNDLE nor in "
                f"NOT_SHIPPED" for d in deps
                if canonical(Requirement(d).name) not in host | bundled | skipped]
    problems += [f"{n} is on the host already: do not bundle it" for n in sorted(bundled & host)]
    return problems


def pip_flags() -> list[str]:
    """pip's options for the host's wheels: CPython 3.12, manylinux x86-64, binaries only."""
    flags = ["--no-deps", "--only-binary=:all:", "--python-version", "3.12",
             "--implementation", "cp", "--disable-pip-version-check"]
    for platform in PLATFORMS:
        flags += ["--platform", platform]
    return flags


def run_pip(args: list[str]) -> None:
    """Runs pip; BundleError with its last lines (exit code 2 when the index is unreachable)."""
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode:
        text = proc.stdout + proc.stderr
        tail = [ln for ln in text.splitlines() if ln.strip() and "is ignored" not in ln][-6:]
        err = BundleError("pip failed:\n  " + "\n  ".join(tail))
        err.network = any(s in text for s in NETWORK_ERRORS)
        raise err


def resolve(specs: list[str], dest: str, dry_run: bool) -> list[dict]:
    """[{name, version, file, requires_dist, bytes}] of the wheels for `specs`, downloaded
    into `dest` (or only resolved, bytes None, with `dry_run`)."""
    if dry_run:
        with tempfile.TemporaryDirectory() as tmp:
            report = os.path.join(tmp, "report.json")
            run_pip(["install", "--dry-run", "--ignore-installed", "--quiet", "--report", report,
                     *pip_flags(), *specs])
            with open(report) as f:
                items = json.load(f)["install"]
        return [{"name": it["metadata"]["name"], "version": it["metadata"]["version"],
                 "file": it["download_info"]["url"].rsplit("/", 1)[-1],
                 "requires_dist": it["metadata"].get("requires_dist", []), "bytes": None}
                for it in items]
    os.makedirs(dest, exist_ok=True)
    run_pip(["download", "--quiet", "-d", dest, *pip_flags(), *specs])
    wanted = {canonical(s.split("==")[0]): s.split("==")[1] for s in specs}
    wheels = []
    for file in sorted(os.listdir(dest)):
        if not file.endswith(".whl"):
            continue
        name, version = file.split("-")[:2]
        if wanted.get(canonical(name)) != version:  # an old version: two stop the install
            os.remove(os.path.join(dest, file))
            continue
        with zipfile.ZipFile(os.path.join(dest, file)) as whl:
            meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
            lines = whl.read(meta).decode().splitlines()
        wheels.append({"name": name, "version": version, "file": file,
                       "requires_dist": [ln.split(":", 1)[1].strip() for ln in lines
                                         if ln.startswith("Requires-Dist:")],
                       "bytes": os.path.getsize(os.path.join(dest, file))})
    return wheels


def check_closure(wheels: list[dict], host: set[str]) -> list[str]:
    """Problems: a requirement of a bundled wheel that is neither on the host nor bundled."""
    bundled = {canonical(w["name"]) for w in wheels}
    return [f"{w['name']} needs {need}, which is neither on the host nor in the bundle"
            for w in wheels for need in sorted(requirements(w["requires_dist"]))
            if need not in host | bundled]


def tree_files(repo: str) -> list[str]:
    """Paths (relative to `repo`) of its tracked and untracked, not ignored files."""
    out = subprocess.run(["git", "-C", repo, "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(repo, p))]


def check_size(tree_bytes: int, bundle_bytes: int, limit: int = LIMIT_BYTES) -> str:
    """'tree X MiB + bundle Y MiB = Z MiB <= 64 MiB'; BundleError when over the limit."""
    total = tree_bytes + bundle_bytes
    line = (f"source tree {tree_bytes / 2**20:.1f} MiB + bundle {bundle_bytes / 2**20:.1f} MiB "
            f"= {total / 2**20:.1f} MiB")
    if total > limit:
        raise BundleError(f"{line}: over the {limit / 2**20:.0f} MiB that may travel to the "
                          "host (ignore large files, or ship fewer wheels)")
    return f"{line} <= {limit / 2**20:.0f} MiB"


def write_tar(path: str, repo: str, files: list[str], dest: str, wheels: list[dict]) -> None:
    """The source tree and the bundle's wheels as one tar file, under pconv-jax/."""
    with tarfile.open(path, "w") as tar:
        for rel in files:
            tar.add(os.path.join(repo, rel), arcname=os.path.join("pconv-jax", rel))
        for w in wheels:
            tar.add(os.path.join(dest, w["file"]),
                    arcname=os.path.join("pconv-jax", ".gpu-bundle", w["file"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", default=os.path.join(REPO, ".gpu-bundle"))
    parser.add_argument("--dry-run", action="store_true",
                        help="resolve the wheels on the index without downloading them")
    parser.add_argument("--host-packages", default=os.path.join(HERE, "host_packages.txt"))
    parser.add_argument("--constraints", default=os.path.join(REPO, "constraints.txt"))
    parser.add_argument("--tar", default=None, help="also write tree + bundle as this tar file")
    args = parser.parse_args(argv)
    try:
        host = host_packages(args.host_packages)
        problems = check_coverage(host, os.path.join(REPO, "pyproject.toml"))
        pinned = pins(args.constraints)
        missing = [n for n in BUNDLE if canonical(n) not in pinned]
        if missing:
            problems.append(f"no version in {args.constraints} for {', '.join(missing)}")
        if problems:
            raise BundleError("; ".join(problems))
        specs = [f"{n}=={pinned[canonical(n)]}" for n in BUNDLE]
        wheels = resolve(specs, args.dest, args.dry_run)
        problems = check_closure(wheels, host)
        if problems:
            raise BundleError("; ".join(problems))
        dest = os.path.abspath(args.dest)
        files = [p for p in tree_files(REPO)
                 if not os.path.abspath(os.path.join(REPO, p)).startswith(dest + os.sep)]
        tree_bytes = sum(os.path.getsize(os.path.join(REPO, p)) for p in files)
        bundle_bytes = BUNDLE_ESTIMATE if args.dry_run else sum(w["bytes"] for w in wheels)
        size_line = check_size(tree_bytes, bundle_bytes)
    except BundleError as err:
        print(f"gpu-bundle: {err}", file=sys.stderr)
        return 2 if getattr(err, "network", False) else 1
    for w in wheels:
        size = "" if w["bytes"] is None else f" ({w['bytes'] / 2**20:.2f} MiB)"
        print(f"  {w['file']}{size}")
    verb = "would fetch" if args.dry_run else f"in {args.dest}:"
    print(f"gpu-bundle: {verb} {len(wheels)} wheels; {size_line}"
          + (" (bundle size estimated)" if args.dry_run else ""))
    if args.tar and not args.dry_run:
        write_tar(args.tar, REPO, files, args.dest, wheels)
        print(f"gpu-bundle: wrote {args.tar} ({os.path.getsize(args.tar) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
