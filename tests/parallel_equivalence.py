"""Run a few protected train steps three ways and print the parameter differences as JSON.

The hardened protection (every default view, plus unlock perturbations in the optimiser state
and estimate views averaged over the global batch), whose whole state is compared.

Started by tests/test_parallel.py in a fresh process with 8 fake CPU devices:
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/parallel_equivalence.py
"""

import json
import sys

import jax
import numpy as np
import optax

from isnn_jax.protection.hardening import Hardening
from isnn_jax.protection.licence import Licence, TransformSpec, random_keys
from isnn_jax.models import build_model
from isnn_jax.training.parallel import DataParallel, host_copy, make_mesh, replicate
from isnn_jax.protection.step import Protection, init_state, make_train_step

STEPS = 5
BATCH = 32


# The hardened step builds every view the default one does (legal, clean, wrong, near) plus the
# partial-key, unlock and estimate views, so one protection covers both; each extra one costs three
# compilations on 8 fake devices (about 50 s of the test suite). Its illegal views are of every
# second example (illegal_every=2), which must pick the same examples on any device count.
PROTECTIONS = {
    "hardened": Protection(spec=TransformSpec(), wrong_views=2, illegal_every=2,
                           illegal_form="uniform_constant",
                           weights={"clean": 1.0, "wrong": 1.0, "near": 1.0, "unlock": 1.0,
                                    "estimate": 1.0, "partial": 1.0},
                           hardening=Hardening(unlock=2, estimate_observed=(4, 12))),
}


def run(kind: str, devices: list, protection: Protection) -> tuple[dict, dict]:
    """State (params, optimiser state) and the last step's metrics after STEPS steps."""
    mesh = make_mesh(devices)
    model = build_model({"name": "small_cnn", "features": (8, 16), "hidden": 32,
                         "detector_features": 16, "input_offset": True}, 10)
    tx = optax.adam(1e-3)
    licence = Licence(bytes(range(32)), "(c) Seller; Buyer; parallel")
    keys = {"licence": licence.key(), "near": random_keys(7, 16)}
    state = replicate(init_state(model, tx, jax.random.key(0), (8, 8, 1), protection), mesh)
    runner = DataParallel(kind, mesh, lambda axis: make_train_step(model, tx, protection, axis))
    keys, rng = runner.broadcast((keys, jax.random.key(1)))
    state = runner.place(state)
    data = np.random.default_rng(0)
    for _ in range(STEPS):
        batch = {"image": data.random((BATCH, 8, 8, 1), dtype=np.float32),
                 "label": data.integers(0, 10, BATCH).astype(np.int32)}
        state, metrics = runner.step(state, batch, rng, keys)
    final = host_copy(runner.canonical(state))
    return {"params": final.params, "opt_state": final.opt_state}, {
        k: float(v) for k, v in jax.device_get(metrics).items()}


def main() -> None:
    devices = jax.devices()
    if len(devices) != 8:
        sys.exit(f"expected 8 devices, got {len(devices)}; set "
                 "XLA_FLAGS=--xla_force_host_platform_device_count=8")
    result = {}
    for name, protection in PROTECTIONS.items():
        result[name] = compare(devices, protection)
    print(json.dumps(result))


def compare(devices: list, protection: Protection) -> dict:
    """Differences of the 8-device sharded and pmap runs from the one-device run."""
    reference, ref_metrics = run("sharded", devices[:1], protection)
    model = build_model({"name": "small_cnn", "features": (8, 16), "hidden": 32,
                         "detector_features": 16, "input_offset": True}, 10)
    initial = model.init(jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))["params"]
    moved = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), initial,
                                             reference["params"])))
    result = {"moved_from_init": moved, "metrics": sorted(ref_metrics)}
    for name, kind, devs in [("sharded8", "sharded", devices), ("pmap8", "pmap", devices)]:
        state, metrics = run(kind, devs, protection)
        diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), state,
                                             reference))
        scale = max(float(np.abs(x).max()) for x in jax.tree.leaves(reference["params"]))
        result[name] = {"max_param_diff": max(diffs), "param_scale": scale,
                        "max_metric_diff": max(abs(metrics[k] - ref_metrics[k]) for k in ref_metrics)}
    return result


if __name__ == "__main__":
    main()
