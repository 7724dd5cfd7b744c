"""A user's conv-BatchNorm-dropout module (docs/examples/bn_classifier.py) protected on the tiny
digits config, with and without BatchNorm, for each transform: how the protected step's
handling of batch statistics (docs/decisions.md) trains.

    PYTHONPATH=. python benchmarks/own_model_digits.py \\
        --out benchmarks/results/own_model_digits.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.records import command_line, write_record

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from tiny_config import tiny_config  # noqa: E402

from isnn_jax.protection.licence import Licence  # noqa: E402
from isnn_jax.training.loop import train_and_evaluate  # noqa: E402
from isnn_jax.training.setup import transform_spec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--kinds", default="additive,shuffle_additive,mix")
    parser.add_argument("--model", default="BNClassifier", help="BNClassifier or BNMLP")
    parser.add_argument("--out", default="benchmarks/results/own_model_digits.json")
    options = parser.parse_args()
    data_dir = tempfile.mkdtemp(prefix="isnn-digits-")
    rows = []
    print(f"{'transform':18s} {'BatchNorm':>9s} {'legal':>7s} {'clean':>7s} {'seconds':>8s}")
    for kind in options.kinds.split(","):
        for batchnorm in (True, False):
            config = tiny_config(data_dir, epochs=options.epochs)
            config.model.name = f"{ROOT}/docs/examples/bn_classifier.py:{options.model}"
            config.licence.kind = kind
            with config.unlocked():
                if options.model == "BNClassifier":
                    config.model.kwargs.features = (16, 32)
                config.model.kwargs.batchnorm = batchnorm
            licence = Licence(bytes(range(32)), "(c) Seller; Buyer; own model",
                              transform_spec(config))
            started = time.perf_counter()
            report = train_and_evaluate(config, tempfile.mkdtemp(prefix="isnn-own-"), licence)
            seconds = time.perf_counter() - started
            rows.append({"model": options.model, "kind": kind, "batchnorm": batchnorm,
                         "legal_accuracy": report["legal_accuracy"],
                         "clean_accuracy": report["clean_accuracy"],
                         "seconds": round(seconds, 1)})
            print(f"{kind:18s} {str(batchnorm):>9s} {report['legal_accuracy']:7.4f} "
                  f"{report['clean_accuracy']:7.4f} {seconds:8.1f}", flush=True)
    write_record(options.out, {"command": command_line("own_model_digits.py"),
                               "epochs": options.epochs, "dataset": "digits (360 test images)",
                               "epsilon": float(tiny_config(data_dir).licence.epsilon),
                               "rows": rows})


if __name__ == "__main__":
    main()
