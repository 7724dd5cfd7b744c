"""The throughput benchmark's JAX figures on two checkouts, side by side: before and after a
change that must not move them (the layout change of docs/architecture.md).

    python benchmarks/layout_before_after.py --before DIR_OF_OLD_CHECKOUT [--rounds 2]

Runs `benchmarks/throughput.py` of each checkout in turn (old, new, old, new, ...) with the
same arguments, each importing its own package, then prints the median step time of every JAX
case per side and their ratio, and writes benchmarks/results/layout/throughput_before_after.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "layout"
ARGS = ["--models", "cnn,resnet18", "--repeats", "3", "--torch_formats", ""]


def run(checkout: Path, label: str) -> dict:
    out = OUT / f"throughput_{label}.json"
    subprocess.run([sys.executable, "benchmarks/throughput.py", *ARGS, "--out", str(out)],
                   cwd=checkout, check=True, env={**os.environ, "PYTHONPATH": str(checkout)})
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", required=True, help="checkout of the commit before")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    steps: dict[tuple[str, str, str], list[float]] = {}
    for index in range(args.rounds):
        for side, checkout in (("before", Path(args.before).resolve()), ("after", ROOT)):
            record = run(checkout, f"{side}_{index + 1}")
            for case in record["results"]:
                for row, values in case["rows"].items():
                    if row.startswith("jax"):
                        key = (f"{case['model']} b{case['batch']}", row, side)
                        steps.setdefault(key, []).extend(values["step_s_all"])
    table = []
    print(f"{'case':<16} {'row':<10} {'before ms':>10} {'after ms':>10} {'after/before':>13}")
    for name, row in sorted({(k[0], k[1]) for k in steps}):
        before = statistics.median(steps[(name, row, "before")])
        after = statistics.median(steps[(name, row, "after")])
        table.append({"case": name, "row": row, "before_step_s": before, "after_step_s": after,
                      "after_over_before": after / before})
        print(f"{name:<16} {row:<10} {before * 1e3:>10.1f} {after * 1e3:>10.1f} "
              f"{after / before:>13.3f}")
    (OUT / "throughput_before_after.json").write_text(json.dumps({
        "command": "python benchmarks/layout_before_after.py --before DIR --rounds "
                   f"{args.rounds}", "throughput_args": ARGS, "rounds": args.rounds,
        "order": "before, after, before, after, ... (each a whole throughput.py run)",
        "median_of": "every repeat's step time of every round", "rows": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
