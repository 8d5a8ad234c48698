"""Test set-up: two CPU devices, so the sharded training path runs on this machine."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
