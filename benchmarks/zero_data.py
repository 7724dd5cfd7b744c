"""Does the trained model keep its key out of its weights? Train, then read the weights (no data).

PYTHONPATH=. python benchmarks/zero_data.py --config default --label digits_default
PYTHONPATH=. python benchmarks/zero_data.py --config fashion_mnist_shuffle7 --label fm_shuffle7 \
    --set train.epochs=1

PYTHONPATH=. python benchmarks/zero_data.py --workdir DIR --licence FILE --label NAME \
    --trained_with "python -m isnn_jax.train ..."

Trains the named config (with `--set FIELD=VALUE` overrides) for a fresh licence in a temporary
workdir (or takes a trained `--workdir` and its `--licence`), then runs the zero-data attack of `python -m isnn_jax.attack --attacks
parameter_reading` on the whole test split. Prints a table and writes
benchmarks/results/zero_data/LABEL.json (the training report's headline and the attack's rows).
"""

from __future__ import annotations

import argparse
import ast
import sys
import tempfile
import time
from pathlib import Path

from records import command_line, write_record

from isnn_jax.attacks.budgets import default_budgets
from isnn_jax.attacks.suite import run_security_evaluation
from isnn_jax.cli.configs import load_config
from isnn_jax.protection.licence import Licence
from isnn_jax.training.loop import train_and_evaluate
from isnn_jax.training.setup import transform_spec

RESULTS = Path(__file__).parent / "results" / "zero_data"


def apply_sets(config, sets: list[str]) -> None:
    """`FIELD=VALUE` overrides (Python literals) on the config, in place."""
    for item in sets:
        path, _, text = item.partition("=")
        group, names = config, path.split(".")
        for name in names[:-1]:
            group = group[name]
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        group[names[-1]] = value


def read_only(args: argparse.Namespace) -> int:
    """The zero-data attack on an already trained workdir."""
    import json

    budgets = default_budgets()
    budgets.eval_images = 0
    attack = run_security_evaluation(args.workdir, args.licence, attacks="parameter_reading",
                                     budgets=budgets)
    final = json.loads((Path(args.workdir) / "final_evaluation.json").read_text())
    reading = attack["attacks"]["parameter_reading"]
    record = {"command": command_line("zero_data.py"), "trained_with": args.trained_with,
              "transform": attack["model"]["transform"],
              "report": {"legal_accuracy": final.get("legal_accuracy"),
                         "clean_accuracy": final.get("clean_accuracy")},
              "parameter_reading": reading, "chance": attack["reference"]["chance"]}
    print(f"zero-data reading, best {reading['max_accuracy']:.2%}  (legal "
          f"{attack['reference']['legal_accuracy']:.2%}, chance {record['chance']:.2%})")
    write_record(RESULTS / f"{args.label}.json", record)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default", help="a packaged config name or a file")
    parser.add_argument("--label", required=True, help="name of the JSON record")
    parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE override")
    parser.add_argument("--workdir", help="read this trained workdir instead of training")
    parser.add_argument("--licence", help="the licence of --workdir (a control only)")
    parser.add_argument("--trained_with", default="", help="the command that trained --workdir")
    args = parser.parse_args(argv)
    if args.workdir:
        return read_only(args)
    config = load_config(args.config)
    apply_sets(config, args.set)
    licence = Licence.issue(config.licence.copyright, transform_spec(config))
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        report = train_and_evaluate(config, Path(root) / "w", licence)
        trained = time.perf_counter() - started
        licence_path = Path(root) / "buyer.licence.json"
        licence.save(licence_path)
        budgets = default_budgets()
        budgets.eval_images = 0
        attack = run_security_evaluation(Path(root) / "w", licence_path,
                                         attacks="parameter_reading", budgets=budgets)
    reading = attack["attacks"]["parameter_reading"]
    headline = {key: report.get(key) for key in ("legal_accuracy", "clean_accuracy",
                                                 "near_key_held_out_max")}
    headline["wrong_key_max"] = report.get("wrong_key", {}).get("max")
    record = {"command": command_line("zero_data.py"), "config": args.config, "sets": args.set,
              "transform": licence.transform.to_dict(), "train_and_evaluate_seconds": trained,
              "report": headline, "parameter_reading": reading,
              "chance": attack["reference"]["chance"]}
    print(f"{'quantity':<44} value")
    for name, value in [*headline.items(), ("zero-data reading, best", reading["max_accuracy"]),
                        ("layout reading (shuffles)", reading.get("layout", {}).get("accuracy")),
                        ("chance", record["chance"])]:
        shown = f"{value:.2%}" if isinstance(value, float) else str(value)
        print(f"{name:<44} {shown}")
    write_record(RESULTS / f"{args.label}.json", record)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
