"""Data parallelism: sharded jit, pmap and one device agree; bad batch sizes are refused."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from isnn_jax.training.parallel import DataParallel, check_batch_size, make_mesh

ROOT = Path(__file__).resolve().parents[1]
# float32 sums over 8 shards add in another order than over one; after 5 Adam steps the
# parameters differ by ~1e-7 (measured). 1e-5 is far below what one step moves them (>1e-3).
TOLERANCE = 1e-5


@pytest.mark.slow
def test_sharded_pmap_and_one_device_give_the_same_parameters():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "parallel_equivalence.py")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    every = json.loads(result.stdout.strip().splitlines()[-1])
    # The hardened step's views are all there, and its whole state (unlock perturbations in the
    # optimiser state included) agrees as closely as the default step's parameters.
    assert {"unlock_accuracy", "estimate_accuracy"} <= set(every["hardened"]["metrics"])
    for protection, diffs in every.items():
        assert diffs["moved_from_init"] > 100 * TOLERANCE, protection
        for name in ("sharded8", "pmap8"):
            assert diffs[name]["max_param_diff"] < TOLERANCE, (protection, diffs)
            assert diffs[name]["max_metric_diff"] < 1e-5, (protection, diffs)


def test_batch_not_divisible_by_devices_names_the_fix():
    mesh = make_mesh()  # 2 fake devices (conftest)
    with pytest.raises(ValueError, match=r"batch_size=5 does not divide by the 2 devices.*"
                                         r"--config.train.batch_size=4"):
        check_batch_size(5, mesh)


def test_illegal_every_must_divide_each_devices_share():
    mesh = make_mesh()  # 2 fake devices: 4 examples each of a batch of 8
    check_batch_size(8, mesh, 4)
    with pytest.raises(ValueError, match=r"objective.illegal_every=3 must be at least 1 and "
                                         r"divide each device's 4 examples"):
        check_batch_size(8, mesh, 3)


def test_unknown_parallelism_is_refused():
    with pytest.raises(ValueError, match="unknown config.parallelism 'pjit'; choose one of sharded, pmap"):
        DataParallel("pjit", make_mesh(), lambda axis: None)
