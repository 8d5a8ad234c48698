"""One process of the two-process tests: tests/distributed_driver.py ADDR ID WORKDIR [sigterm].

With `sigterm`, the run is long and process 0 alone sends itself SIGTERM once two steps are
logged: both processes must stop at the same step.
"""

import os
import signal
import sys
import threading
import time

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
    sigterm = len(sys.argv) > 4 and sys.argv[4] == "sigterm"
    if sigterm and process_id == 0:
        threading.Thread(target=_sigterm_after_two_steps, args=(workdir,), daemon=True).start()
    result = train.train_and_evaluate(tiny_config(steps=10_000 if sigterm else 2), workdir)
    print(f"process {process_id} stopped at step {result['step']}", flush=True)
    arrays = {k.replace("'", ""): v for k, v in model_arrays(result["model"]).items()}
    np.savez(os.path.join(workdir, f"params_{process_id}.npz"), **arrays)


def _sigterm_after_two_steps(workdir: str) -> None:
    metrics = os.path.join(workdir, "metrics.jsonl")
    while not (os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 2):
        time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    main()
