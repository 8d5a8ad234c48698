"""Test set-up: two CPU devices, so the sharded training path runs on this machine, and one
persistent compilation cache for the session, shared with every subprocess the tests start
(the CLIs, the GPU check's dry run, multi-process runs): an executable compiled once is loaded,
not compiled again, in the next process that needs it."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="pconv-jax-test-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
if "PCONV_JAX_CACHE" not in os.environ:  # the baselines' fill cache: never the user's ~/.cache
    _fills = tempfile.mkdtemp(prefix="pconv-jax-test-fills-")
    atexit.register(shutil.rmtree, _fills, ignore_errors=True)
    os.environ["PCONV_JAX_CACHE"] = _fills

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 2)


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained run (2 steps) to restore from or serve."""
    from tests.train_util import tiny_run

    return tiny_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def inpainter(run_dir):
    """The Inpainter of `run_dir`."""
    from pconv_jax.inpaint import Inpainter

    return Inpainter.from_workdir(run_dir)


@pytest.fixture(scope="module")
def served(inpainter, tmp_path_factory):
    """The page of `inpainter`, launched in this process on a free port: its URL."""
    from pconv_jax import app
    from tests.app_util import free_port

    page = app.build(inpainter, out_dir=str(tmp_path_factory.mktemp("results")))
    port = free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                quiet=True)
    yield f"http://127.0.0.1:{port}/"
    page.close()


@pytest.fixture(scope="module")
def cli_server(run_dir, tmp_path_factory):
    """`python -m pconv_jax.app` on the tiny run and a free port, GRADIO_TEMP_DIR pointing
    at a test folder: a tests.app_util.AppServer (url, root, pid, log)."""
    from tests.app_util import AppServer

    cache = tmp_path_factory.mktemp("gradio_cache")
    with AppServer(run_dir, env={"GRADIO_TEMP_DIR": str(cache)}) as server:
        yield server


# Files by their share of the suite's time, longest first (BENCHMARKS.md, "make test"): with
# `-n N --dist loadfile` each worker takes the next whole file when it is free, so starting with
# the longest leaves short files to fill the end instead of one worker finishing alone.
LONGEST_FIRST = ("test_train.py", "test_fid_lpips.py", "test_app.py", "test_gpu_check.py",
                 "test_inpaint.py", "test_export.py", "test_experiments.py", "test_install.py",
                 "test_convert.py", "test_mixed_precision.py", "test_cpu_hour.py",
                 "test_app_hostile.py", "test_model.py")


def pytest_collection_modifyitems(items):
    """Orders the collected tests longest file first, keeping each file's own order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
