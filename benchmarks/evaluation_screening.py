"""Screened-and-confirmed evaluation against the exhaustive one, on a trained Fashion-MNIST model.

    .venv/bin/python -m isnn_jax.train --config configs/fashion_mnist.py --workdir /tmp/fm \
        --issue_licence /tmp/fm.licence.json --config.train.epochs=1
    PYTHONPATH=. .venv/bin/python benchmarks/evaluation_screening.py --workdir /tmp/fm \
        --licence /tmp/fm.licence.json --train_seconds_per_epoch 283 \
        --check_random 200 --check_near_per_class 16

    PYTHONPATH=. .venv/bin/python benchmarks/evaluation_screening.py --workdir /tmp/fm \
        --licence /tmp/fm.licence.json --train_seconds_per_epoch 283 \
        --screen_images 128 --confirm_top 4 --append

Runs (1) the final evaluation as `configs/fashion_mnist.py` asks for it (1,000 random
licences, every near licence), screened, timed against the training time of that config's
epochs; then (2) screened and (3) exhaustive on a smaller licence set (`--check_*`; the
exhaustive pass over every licence takes hours on 2 cores), whose maxima should agree. With
`--append` the runs join the existing record and its exhaustive run is reused. Prints a table
and writes `--out` (benchmarks/results/evaluation_screening.json) after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from records import command_line, write_record  # noqa: E402

from isnn_jax import api  # noqa: E402
from isnn_jax.cli.logs import setup_logging  # noqa: E402
from isnn_jax.training.config import default_config  # noqa: E402
from isnn_jax.evaluation.counting import images_per_call  # noqa: E402
from isnn_jax.evaluation.report import format_report  # noqa: E402
from isnn_jax.evaluation.screening import evaluate_protection  # noqa: E402
from isnn_jax.protection.licence import Licence  # noqa: E402
from isnn_jax.protection.near_keys import trained_near_from_config  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "evaluation_screening.json"
MAXIMA = ("wrong_key_max", "wrong_key_rank_attack_max", "near_key_held_out_max",
          "near_key_trained_max", "near_key_max")


def maxima(report: dict) -> dict:
    """The maxima a screen could miss, by name."""
    return {"wrong_key_max": report.get("wrong_key", {}).get("max"),
            "wrong_key_rank_attack_max": report.get("wrong_key_rank_attack", {}).get("max_accuracy"),
            "near_key_held_out_max": report.get("near_key_held_out_max"),
            "near_key_trained_max": report.get("near_key_trained_max"),
            "near_key_max": report.get("near_key_max")}


def run(name: str, model, licence, images, labels, trained, **options) -> dict:
    """One timed evaluation and the figures the record keeps of it."""
    start = time.perf_counter()
    report = evaluate_protection(model.module, model.params, licence, images, labels,
                                 trained_near=trained, **options)
    seconds = time.perf_counter() - start
    print(f"\n[{name}] {seconds:.0f} s\n{format_report(report)}", flush=True)
    return {"name": name, "options": options, "seconds": seconds,
            "evaluation": report["evaluation"], "maxima": maxima(report),
            "legal_accuracy": report["legal_accuracy"], "clean_accuracy": report["clean_accuracy"],
            "wrong_key_mean": report.get("wrong_key", {}).get("mean"),
            "load_average": os.getloadavg()[0]}


def compare(record: dict) -> None:
    """Each screened check run against the exhaustive run over the same licences."""
    runs = record["runs"]
    exhaustive = [r for r in runs if r["evaluation"]["mode"] == "exhaustive"]
    record["checks"] = []
    for run_ in runs:
        if not run_["name"].startswith("check") or run_["evaluation"]["mode"] != "screened":
            continue
        same = [e for e in exhaustive if all(e["options"][k] == run_["options"][k]
                                             for k in ("random_licences", "near_per_class", "seed"))]
        if not same:
            continue
        full = same[-1]
        record["checks"].append({
            "screen_images": run_["evaluation"]["screen_images"],
            "confirm_top": run_["evaluation"]["confirm_top"],
            "licences": run_["evaluation"]["licences"],
            "screened_seconds": run_["seconds"], "exhaustive_seconds": full["seconds"],
            "maxima": {name: {"screened": run_["maxima"][name], "exhaustive": full["maxima"][name],
                              "difference": None if full["maxima"][name] is None
                              else run_["maxima"][name] - full["maxima"][name]}
                       for name in MAXIMA}})
        per_licence = full["seconds"] / full["evaluation"]["licences"]
        for config_run in runs:
            if config_run["name"].startswith("config"):
                config_run["exhaustive_seconds_estimate"] = \
                    per_licence * config_run["evaluation"]["licences"]


def main() -> None:
    """Run the evaluations, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/fm")
    parser.add_argument("--licence", default="/tmp/fm.licence.json")
    parser.add_argument("--train_seconds_per_epoch", type=float, required=True,
                        help="training time of one epoch measured under the same load (the "
                        "train log's first to last step line)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the config's training")
    parser.add_argument("--screen_images", type=int, help="default: the eval config's")
    parser.add_argument("--confirm_top", type=int, help="default: the eval config's")
    parser.add_argument("--check_random", type=int, default=200)
    parser.add_argument("--check_near_per_class", type=int, default=16)
    parser.add_argument("--skip_exhaustive", action="store_true")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--append", action="store_true",
                        help="add these runs to the existing JSON (its exhaustive run is reused)")
    args = parser.parse_args()
    setup_logging()
    out = Path(args.out)

    licence = Licence.load(args.licence)
    model = api.load_protected(args.workdir)
    images, labels = model.test_data()
    config = model.meta["config"]
    trained = trained_near_from_config(licence, config)
    ev = {**default_config().eval.to_dict(), **config["eval"]}
    base = {"seed": ev["seed"], "batch_size": ev["batch_size"],
            "screen_images": args.screen_images or ev["screen_images"],
            "confirm_top": args.confirm_top or ev["confirm_top"]}
    record = {"command": command_line("evaluation_screening.py"), "workdir": args.workdir,
              "checkpoint_step": model.step, "machine": f"{os.cpu_count()} CPU cores, shared",
              "images_per_call": images_per_call(),
              "train_seconds_per_epoch": args.train_seconds_per_epoch, "epochs": args.epochs,
              "train_seconds": args.train_seconds_per_epoch * args.epochs, "runs": []}
    if args.append and out.exists():
        previous = json.loads(out.read_text())
        record["runs"] = [{"train_seconds": previous["train_seconds"], **r} for r in previous["runs"]]
        record["command"] = [*([previous["command"]] if isinstance(previous["command"], str)
                               else previous["command"]), record["command"]]

    def save() -> None:
        compare(record)
        for run_ in record["runs"]:
            if run_["name"].startswith("config"):  # each against the training timed beside it
                run_.setdefault("train_seconds", record["train_seconds"])
                run_["share_of_training"] = run_["seconds"] / run_["train_seconds"]
        write_record(out, record)

    record["runs"].append(run("config: screened", model, licence, images, labels, trained,
                              **base, random_licences=1000, near_per_class=0))
    save()
    check = {**base, "random_licences": args.check_random,
             "near_per_class": args.check_near_per_class}
    record["runs"].append(run("check: screened", model, licence, images, labels, trained, **check))
    save()
    have_exhaustive = any(r["evaluation"]["mode"] == "exhaustive" and all(
        r["options"][k] == check[k] for k in ("random_licences", "near_per_class", "seed"))
        for r in record["runs"])
    if not args.skip_exhaustive and not have_exhaustive:
        record["runs"].append(run("check: exhaustive", model, licence, images, labels, trained,
                                  **check, exhaustive=True))
        save()

    pct = lambda v: "—" if v is None else f"{v:.2%}"  # noqa: E731
    print("\n| run | licences | screened on | confirmed | seconds | share of training | wrong max "
          "| held-out near max | trained near max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in record["runs"]:
        e, m = row["evaluation"], row["maxima"]
        share = f"{row['share_of_training']:.1%}" if "share_of_training" in row else ""
        print(f"| {row['name']} | {e['licences']:,} | {e['screen_images']:,} | "
              f"{e['licences_confirmed']} on {e['confirm_images']:,} | {row['seconds']:.0f} | "
              f"{share} | {pct(m['wrong_key_max'])} | {pct(m['near_key_held_out_max'])} | "
              f"{pct(m['near_key_trained_max'])} |")
    for check_ in record["checks"]:
        diffs = ", ".join(f"{name} {v['difference'] * 100:+.2f}" for name, v in
                          check_["maxima"].items() if v["difference"] is not None)
        print(f"screen {check_['screen_images']} / top {check_['confirm_top']} minus exhaustive "
              f"(points): {diffs}")


if __name__ == "__main__":
    main()
