"""One process of the two-process test: python tests/distributed_driver.py ADDR ID WORKDIR."""

import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    address, process_id, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(coordinator_address=address, num_processes=2,
                               process_id=process_id)
    import numpy as np

    from pconv_jax import train
    from tests.train_util import model_arrays, tiny_config

    assert jax.process_count() == 2 and jax.device_count() == 2
    result = train.train_and_evaluate(tiny_config(steps=2), workdir)
    arrays = {k.replace("'", ""): v for k, v in model_arrays(result["model"]).items()}
    np.savez(os.path.join(workdir, f"params_{process_id}.npz"), **arrays)


if __name__ == "__main__":
    main()
