"""Step time and images/s of the protected train step for 1, 2, 4, 8 devices, sharded and pmap.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/scaling.py   # CPU
    python benchmarks/scaling.py --out benchmarks/results/scaling_gpu.json           # accelerators

On fake CPU devices all "devices" share the same cores, so the table measures the overhead of
each path at a fixed global batch, not a speed-up; on real accelerators it measures scaling
(per-device batch fixed with --weak).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from isnn_jax.protection.licence import Licence, TransformSpec, random_keys  # noqa: E402
from isnn_jax.models import build_model  # noqa: E402
from isnn_jax.training.parallel import DataParallel, make_mesh, replicate  # noqa: E402
from isnn_jax.protection.step import Protection, init_state, make_train_step  # noqa: E402
from records import command_line, write_record  # noqa: E402


def measure(kind: str, devices: list, batch: int, steps: int, image_shape: tuple[int, ...],
            model_config: dict) -> dict:
    """Median seconds per step (after two compiling/warm-up steps) and images/s."""
    mesh = make_mesh(devices)
    model = build_model(model_config, 10)
    tx = optax.adam(1e-3)
    protection = Protection(spec=TransformSpec(), wrong_views=2, illegal_form="uniform_margin")
    keys = {"licence": Licence(bytes(range(32)), "(c) bench").key(), "near": random_keys(3, 64)}
    state = replicate(init_state(model, tx, jax.random.key(0), image_shape), mesh)
    runner = DataParallel(kind, mesh, lambda axis: make_train_step(model, tx, protection, axis))
    keys, rng = runner.broadcast((keys, jax.random.key(1)))
    state = runner.place(state)
    data = np.random.default_rng(0)
    batch_data = {"image": data.random((batch, *image_shape), dtype=np.float32),
                  "label": data.integers(0, 10, batch).astype(np.int32)}
    times = []
    for index in range(steps + 2):
        started = time.perf_counter()
        state, metrics = runner.step(state, batch_data, rng, keys)
        jax.block_until_ready(metrics)
        if index >= 2:
            times.append(time.perf_counter() - started)
    step_s = statistics.median(times)
    views = 1 + 1 + protection.wrong_views + 1  # legal, clean, wrong views, near
    return {"path": kind, "devices": len(devices), "global_batch": batch, "step_s": step_s,
            "images_per_s": batch / step_s, "forward_images_per_s": batch * views / step_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="global batch (per device with --weak)")
    parser.add_argument("--weak", action="store_true", help="keep the per-device batch fixed")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling_cpu.json"))
    args = parser.parse_args()
    available = jax.devices()
    model_config = {"name": "small_cnn", "features": (16, 32), "hidden": 128,
                    "detector_features": 64, "input_offset": True}
    rows = []
    for count in (int(c) for c in args.devices.split(",")):
        if count > len(available):
            print(f"skipping {count} devices: only {len(available)} present")
            continue
        batch = args.batch * count if args.weak else args.batch
        for kind in ("sharded", "pmap"):
            rows.append(measure(kind, available[:count], batch, args.steps, (28, 28, 1), model_config))
            row = rows[-1]
            print(f"{kind:8s} {count} devices  batch {batch:5d}  {row['step_s'] * 1e3:8.1f} ms/step  "
                  f"{row['images_per_s']:9.0f} img/s", flush=True)
    base = {row["path"]: row["images_per_s"] for row in rows if row["devices"] == rows[0]["devices"]}
    print(f"\n{'path':8s} {'devices':>7s} {'batch':>6s} {'ms/step':>9s} {'img/s':>9s} {'vs 1 dev':>9s}")
    for row in rows:
        row["relative_to_first"] = row["images_per_s"] / base[row["path"]]
        print(f"{row['path']:8s} {row['devices']:7d} {row['global_batch']:6d} "
              f"{row['step_s'] * 1e3:9.1f} {row['images_per_s']:9.0f} {row['relative_to_first']:9.2f}")
    record = {"command": command_line("scaling.py"),
              "platform": jax.devices()[0].platform, "device_kind": jax.devices()[0].device_kind,
              "host": platform.processor() or platform.machine(), "jax": jax.__version__,
              "model": model_config, "rows": rows}
    write_record(args.out, record)


if __name__ == "__main__":
    main()
