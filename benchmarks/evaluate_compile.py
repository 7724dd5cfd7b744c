"""Time `evaluate_protection` on the tiny digits model: the cost of compiling per edit class.

    git show ea33afc:isnn_jax/evaluate.py > /tmp/evaluate_before.py
    python benchmarks/evaluate_compile.py --before /tmp/evaluate_before.py --repeats 2

Runs the given earlier evaluate module and the current one alternately in fresh processes
(so neither reuses the other's compilations) and writes
benchmarks/results/evaluate_compile.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import importlib.util, sys, time
sys.path[:0] = [{root!r}, {tests!r}]
import jax, jax.numpy as jnp, numpy as np
from tiny_config import RESUME_LICENCE, get_config
from isnn_jax.data import load_split, to_float
from isnn_jax.models import build_model
path = {path!r}
if path:
    spec = importlib.util.spec_from_file_location("evaluate_before", path)
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
else:
    import isnn_jax.evaluation.screening as module
model = build_model(get_config().model.to_dict(), 10)
x, y = load_split("digits", "test", data_dir={data_dir!r})
params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
start = time.perf_counter()
report = module.evaluate_protection(model, params, RESUME_LICENCE, to_float(x), y.astype(np.int32),
                                    random_licences=20, seed=0, near_per_class=2, batch_size=1024)
print(time.perf_counter() - start, report["legal_accuracy"], report["wrong_key"]["mean"])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="an earlier isnn_jax/evaluate.py")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data_dir", default="/tmp/isnn_bench_tfds")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/evaluate_compile.json"))
    args = parser.parse_args()
    times: dict[str, list[float]] = {"before": [], "after": []}
    results = {}
    for _ in range(args.repeats):
        for name, path in (("before", args.before), ("after", "")):
            code = CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), path=path,
                                data_dir=args.data_dir)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout.strip().splitlines()[-1].split()
            times[name].append(float(out[0]))
            results[name] = [float(v) for v in out[1:]]
    assert results["before"] == results["after"], results  # same numbers, only faster
    row = {name: statistics.median(values) for name, values in times.items()}
    print(f"{'version':8s} {'median s':>9s}  runs")
    for name, values in times.items():
        print(f"{name:8s} {row[name]:9.2f}  {', '.join(f'{v:.2f}' for v in values)}")
    print(f"speed-up {row['before'] / row['after']:.2f}x (legal, wrong-key mean identical)")
    Path(args.out).write_text(json.dumps({
        "command": "python benchmarks/evaluate_compile.py " + " ".join(sys.argv[1:]),
        "seconds": times, "median_seconds": row, "speedup": row["before"] / row["after"],
        "identical_results": results["after"]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
