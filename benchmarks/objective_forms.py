"""Compare the illegal-loss forms on one config: the measurement behind the default form.

    python benchmarks/objective_forms.py --config configs/fashion_mnist.py --epochs 1

Each form trains with the real trainer into a fresh temporary workdir with the same licence,
seed and data order. The table lists legal, clean, wrong-key and near-key accuracy per form and
the best rank attack (the hit rate of always picking the class at one output rank, the argmin
included) on clean and on wrong-key images; the JSON lands in
benchmarks/results/objective_forms.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from isnn_jax.protection.licence import Licence  # noqa: E402
from isnn_jax.training.loop import train_and_evaluate  # noqa: E402
from isnn_jax.training.setup import transform_spec  # noqa: E402

# (label, illegal_form, temperature)
VARIANTS = {
    "uniform": ("uniform", 1.0),
    "uniform_t3": ("uniform", 3.0),
    "suppress": ("suppress", 1.0),
    "uniform_margin": ("uniform_margin", 1.0),
    "uniform_constant": ("uniform_constant", 1.0),
    "constant": ("constant", 1.0),
}


def load_config(path: str):
    spec = importlib.util.spec_from_file_location("_bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "fashion_mnist.py"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--random_licences", type=int, default=200)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {', '.join(VARIANTS)}")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "objective_forms.json"))
    args = parser.parse_args()
    rows = []
    for name in args.variants.split(","):
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        form, temperature = VARIANTS[name]
        config = load_config(args.config)
        config.train.epochs = args.epochs
        config.objective.illegal_form = form
        config.objective.temperature = temperature
        config.eval.random_licences = args.random_licences
        config.eval.near_per_class = 16
        licence = Licence(bytes(range(32)), config.licence.copyright, transform_spec(config))
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as workdir:
            report = train_and_evaluate(config, Path(workdir) / "run", licence)
        rows.append({"variant": name, "illegal_form": form, "temperature": temperature,
                     "legal": report["legal_accuracy"], "clean": report["clean_accuracy"],
                     "wrong_mean": report["wrong_key"]["mean"], "wrong_max": report["wrong_key"]["max"],
                     "near_max": report["near_key_max"],
                     "clean_rank_attack": report["clean_rank_attack"]["accuracy"],
                     "wrong_rank_attack": report["wrong_key_rank_attack"]["mean_accuracy"],
                     "seconds": time.perf_counter() - started})
        print(f"{name:16s} legal {rows[-1]['legal']:.4f}  clean {rows[-1]['clean']:.4f}  "
              f"wrong mean {rows[-1]['wrong_mean']:.4f} max {rows[-1]['wrong_max']:.4f}  "
              f"near max {rows[-1]['near_max']:.4f}  rank attack {rows[-1]['clean_rank_attack']:.4f}",
              flush=True)
    print(f"\n{'variant':16s} {'legal':>7s} {'clean':>7s} {'wrong':>7s} {'wr max':>7s} {'near mx':>7s}"
          f" {'rank atk clean':>14s} {'rank atk wrong':>14s}")
    for row in rows:
        print(f"{row['variant']:16s} {row['legal']:7.2%} {row['clean']:7.2%} {row['wrong_mean']:7.2%} "
              f"{row['wrong_max']:7.2%} {row['near_max']:7.2%} {row['clean_rank_attack']:14.2%} "
              f"{row['wrong_rank_attack']:14.2%}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/objective_forms.py " + " ".join(sys.argv[1:])
    config_path = Path(args.config).resolve()
    config_name = str(config_path.relative_to(ROOT)) if config_path.is_relative_to(ROOT) else args.config
    out.write_text(json.dumps({"command": command.strip(), "config": config_name,
                               "epochs": args.epochs, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
