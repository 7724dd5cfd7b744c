"""The ISNN step on one CPU device against the same step sharded over one device per core.

    PYTHONPATH=. python benchmarks/cpu_devices.py --models cnn,resnet18 --devices 1,2

XLA's CPU backend runs many of the step's elementwise fusions on one thread; splitting the
batch over `--xla_force_host_platform_device_count` devices (one per core, the batch on the
`data` axis, state replicated, as `isnn_jax.train` does on a mesh) runs them on every core.
Each device count runs in its own process (XLA_FLAGS is read once), interleaved repeat by
repeat so a load change hits both; the table gives median seconds per step and the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from records import command_line, write_record  # noqa: E402

BATCHES = {"cnn": 128, "resnet18": 16}


def child(model: str, batch: int, steps: int) -> None:
    """Compile, warm up, time `steps` steps; print one JSON line."""
    import jax

    from isnn_jax.training.parallel import batch_sharding, make_mesh, replicated
    from throughput import build_jax_case

    mesh = make_mesh()
    case = build_jax_case(model, batch)
    case = dataclasses.replace(
        case, state=jax.device_put(case.state, replicated(mesh)),
        batch=jax.device_put(case.batch, batch_sharding(mesh)),
        keys=jax.device_put(case.keys, replicated(mesh)),
        rng=jax.device_put(case.rng, replicated(mesh)))
    state = case.run(case.state, 2)  # compile and warm up
    start = time.perf_counter()
    case.run(state, steps)
    print(json.dumps({"devices": jax.device_count(),
                      "seconds_per_step": (time.perf_counter() - start) / steps}))


def run_child(model: str, batch: int, steps: int, devices: int) -> float:
    """Seconds per step of `model` on `devices` CPU devices, measured in a fresh process."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, __file__, "--child", model, "--batch", str(batch),
                          "--steps", str(steps)], env=env, check=True, capture_output=True,
                         text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["seconds_per_step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,resnet18")
    parser.add_argument("--devices", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0, help="0: 5 for the CNN, 1 for ResNet-18")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu_devices.json"))
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch, args.steps)
        return
    counts = [int(d) for d in args.devices.split(",")]
    rows = []
    for model in args.models.split(","):
        batch, steps = BATCHES[model], args.steps or (5 if model == "cnn" else 1)
        times: dict[int, list[float]] = {d: [] for d in counts}
        for _ in range(args.repeats):
            for d in counts:
                times[d].append(run_child(model, batch, steps, d))
        base = statistics.median(times[counts[0]])
        for d in counts:
            median = statistics.median(times[d])
            rows.append({"model": model, "batch": batch, "devices": d, "steps": steps,
                         "seconds_per_step": times[d], "median": median,
                         "speedup_vs_first": base / median,
                         "clean_images_per_second": batch / median})
    print(f"{'model':<10} {'B':>4} {'devices':>7} {'s/step':>8} {'img/s':>8} {'speed-up':>8}")
    for r in rows:
        print(f"{r['model']:<10} {r['batch']:>4} {r['devices']:>7} {r['median']:>8.3f} "
              f"{r['clean_images_per_second']:>8.1f} {r['speedup_vs_first']:>7.2f}x")
    load = os.getloadavg()
    write_record(args.out, {"command": command_line("cpu_devices.py"),
                            "cores": os.cpu_count(), "load_after": load, "rows": rows})


if __name__ == "__main__":
    main()
