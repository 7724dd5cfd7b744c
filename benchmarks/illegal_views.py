"""Which illegal views, at what rate, keep the protection of configs/fashion_mnist.py.

    PYTHONPATH=. python benchmarks/illegal_views.py --root DIR        # trains what is missing
    PYTHONPATH=. python benchmarks/illegal_views.py --root DIR --timing_only

Each setting trains `configs/fashion_mnist.py` (5 epochs, the small CNN, the additive pattern)
for one licence (issued into DIR once) in DIR/SETTING, unless DIR/SETTING already holds a
final evaluation; `every1_seed1` repeats the default with another seed, to show the noise.
The protection metrics come from each run's final_evaluation.json (the trainer's screened
and confirmed evaluation: legal, clean, wrong keys, held-out near keys, rank attack). Speed is
measured apart, with the machine otherwise idle: each view setting trains `--timing_steps`
steps from scratch in a temporary workdir, and the median steps/s of its log lines after the
first (which holds the compilation) is reported; network images per example are
1 (legal) + (1 clean + wrong_views + 1 near) / illegal_every. Prints the table and writes
benchmarks/results/illegal_views.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from records import command_line, write_record  # noqa: E402

SETTINGS: dict[str, dict[str, int]] = {  # name -> objective overrides (seed apart)
    "every1": {"illegal_every": 1, "wrong_views": 2},
    "every1_seed1": {"illegal_every": 1, "wrong_views": 2, "seed": 1},
    "every2": {"illegal_every": 2, "wrong_views": 2},
    "every4": {"illegal_every": 4, "wrong_views": 2},
    "every2_wrong1": {"illegal_every": 2, "wrong_views": 1},
}
RATE = re.compile(r"([0-9.]+) steps/s")


def overrides(setting: dict[str, int]) -> list[str]:
    """The trainer's flags for one setting."""
    flags = [f"--config.objective.{name}={value}" for name, value in setting.items()
             if name != "seed"]
    return flags + ([f"--config.seed={setting['seed']}"] if "seed" in setting else [])


def trainer(workdir: Path, licence: Path, extra: list[str]) -> list[str]:
    issue = "--issue_licence" if not licence.exists() else "--licence"
    return [sys.executable, "-m", "isnn_jax.train", "--config", "fashion_mnist",
            "--workdir", str(workdir), issue, str(licence), *extra]


def network_images(setting: dict[str, int]) -> float:
    """Network images per training example: the legal view, then the thinned illegal ones."""
    return 1 + (2 + setting["wrong_views"]) / setting["illegal_every"]


def steps_per_second(licence: Path, setting: dict[str, int], steps: int) -> float:
    """Median steps/s of a short run's log lines after the first (the compilation)."""
    with tempfile.TemporaryDirectory() as scratch:
        result = subprocess.run(
            trainer(Path(scratch) / "w", licence, overrides(setting) + [
                f"--config.train.stop_after_steps={steps}", "--config.train.log_every_steps=50",
                "--config.eval.random_licences=0"]),
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if result.returncode != 0:
        raise SystemExit(f"error: the timing run failed:\n{result.stderr[-2000:]}")
    rates = [float(m.group(1)) for m in RATE.finditer(result.stderr)]
    return statistics.median(rates[1:]) if len(rates) > 1 else float("nan")


def metrics(workdir: Path) -> dict[str, Any]:
    """The protection metrics of one finished run."""
    report = json.loads((workdir / "final_evaluation.json").read_text())
    return {"legal": report["legal_accuracy"], "clean": report["clean_accuracy"],
            "wrong_mean": report["wrong_key"]["mean"], "wrong_max": report["wrong_key"]["max"],
            "near_held_out_max": report["near_key_held_out_max"],
            "rank_attack": report["clean_rank_attack"]["accuracy"], "step": report["step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="folder of the runs (kept)")
    parser.add_argument("--timing_steps", type=int, default=300)
    parser.add_argument("--timing_only", action="store_true", help="train nothing missing")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                             "illegal_views.json"))
    args = parser.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    licence = root / "l.json"
    rows = []
    for name, setting in SETTINGS.items():
        workdir = root / name
        if not (workdir / "final_evaluation.json").exists():
            if args.timing_only:
                continue
            subprocess.run(trainer(workdir, licence, overrides(setting)), check=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        rows.append({"setting": name, **setting, "network_images": network_images(setting),
                     **metrics(workdir)})
    timed: dict[tuple[int, int], float] = {}
    for row in rows:
        views = (row["illegal_every"], row["wrong_views"])
        if views not in timed:
            timed[views] = steps_per_second(licence, SETTINGS[row["setting"]], args.timing_steps)
        row["steps_per_s"] = timed[views]
    base = next(row for row in rows if row["setting"] == "every1")["steps_per_s"]
    print(f"{'setting':15} {'images':>6} {'steps/s':>8} {'speed-up':>8} {'legal':>7} {'clean':>7} "
          f"{'wrong mean':>10} {'wrong max':>9} {'near max':>8} {'rank':>7}")
    for row in rows:
        row["speedup"] = row["steps_per_s"] / base
        print(f"{row['setting']:15} {row['network_images']:6.1f} {row['steps_per_s']:8.2f} "
              f"{row['speedup']:7.2f}x {100 * row['legal']:6.2f}% {100 * row['clean']:6.2f}% "
              f"{100 * row['wrong_mean']:9.2f}% {100 * row['wrong_max']:8.2f}% "
              f"{100 * row['near_held_out_max']:7.2f}% {100 * row['rank_attack']:6.2f}%")
    write_record(args.out, {"command": command_line("illegal_views.py"), "config": "fashion_mnist",
                            "timing_steps": args.timing_steps, "cpu_count": os.cpu_count(),
                            "loadavg": os.getloadavg(), "rows": rows})


if __name__ == "__main__":
    main()
