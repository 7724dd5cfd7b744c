"""Protect a model for one buyer: train for the buyer's registered licence, record the model.

python -m isnn_jax.protect --registry DIR --buyer NAME --workdir DIR
    [--config configs/fashion_mnist.py] [--config.train.epochs=3 ...]

The licence comes from the seller's registry (it never needs to exist as a file on the training
machine); the transform fields of the config are taken from the licence. After training, the
model fingerprint (SHA-256 of the parameters) is recorded in the registry next to the licence.
Exit codes as python -m isnn_jax.train: 0 done, 2 bad input (one `error:` line), 75 preempted
after saving a checkpoint (rerun the same command to resume).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import ml_collections

from isnn_jax.licence import Licence, LicenceError
from isnn_jax.registry import Entry, open_registry


def configure_for_licence(config: ml_collections.ConfigDict, licence: Licence) -> None:
    """Set the config's transform fields from the licence (in place) and turn protection on."""
    spec = licence.transform
    config.protect = True
    config.licence.kind = spec.kind
    config.licence.epsilon = float(spec.epsilon)
    config.licence.block_size = int(spec.block_size)
    config.licence.distribution = spec.distribution
    config.licence.copyright = licence.copyright


def record_model(registry_dir: str | Path, buyer: str, workdir: str | Path) -> Entry:
    """Record the newest checkpoint of `workdir` as the buyer's model; returns the updated record."""
    from isnn_jax import api
    from isnn_jax.model_fingerprint import model_fingerprint

    with open_registry(registry_dir) as registry:
        licence = registry.licence(buyer)  # a revoked licence raises here
        model = api.load_protected(workdir)
        trained_for = model.meta.get("licence_fingerprint")
        if trained_for is None:
            raise LicenceError(f"{workdir} holds an unprotected model; protect one for {buyer!r} "
                               "with python -m isnn_jax.protect")
        return registry.record_model(buyer, model_fingerprint(model.params),
                                     str(Path(workdir).absolute()), model.step,
                                     licence_id=trained_for)


def protect_for_buyer(registry_dir: str | Path, buyer: str, config: ml_collections.ConfigDict,
                      workdir: str | Path) -> dict[str, Any]:
    """Train (or resume) `workdir` for the buyer's licence and record the model in the registry."""
    from isnn_jax.train import train_and_evaluate

    with open_registry(registry_dir) as registry:
        licence = registry.licence(buyer)
    configure_for_licence(config, licence)
    report = train_and_evaluate(config, workdir, licence)
    if report.get("stopped_early"):
        return report
    entry = record_model(registry_dir, buyer, workdir)
    here = str(Path(workdir).absolute())
    report["model_fingerprint"] = [m for m in entry.models if m["workdir"] == here][-1][
        "model_fingerprint"]
    return report


def _define_flags(parser: Any) -> None:
    """The flags of `python -m isnn_jax.protect` besides --config (isnn_jax.cli adds that one)."""
    parser.add_argument("--registry", required=True, help="the seller's licence registry directory")
    parser.add_argument("--buyer", required=True,
                        help="the buyer whose registered licence the model is trained for")
    parser.add_argument("--workdir", required=True,
                        help="directory for checkpoints, metrics and metadata (resumed if it "
                             "holds a checkpoint)")


def _run(args: Any, config: ml_collections.ConfigDict) -> str:
    """Train for the buyer's licence and record the model; the summary lines to print."""
    from isnn_jax.evaluate import format_report

    report = protect_for_buyer(args.registry, args.buyer, config, args.workdir)
    if report.get("stopped_early"):
        return f"stopped at step {report['step']}; rerun to resume (nothing recorded yet)"
    return (f"{format_report(report)}\nrecorded model {report['model_fingerprint'][:16]} for "
            f"buyer {args.buyer!r} in {args.registry}")


def main(argv: list[str] | None = None) -> int:
    """Command line: train for the buyer's licence, print the evaluation and the fingerprint;
    the same path, flags, config handling and exit codes (0, 2, 75) as python -m isnn_jax.train."""
    from isnn_jax.cli import training_main

    return training_main(argv, prog="python -m isnn_jax.protect", description=__doc__,
                         add_arguments=_define_flags, run=_run)


if __name__ == "__main__":
    from isnn_jax.protect import main as _main  # the imported module's classes, not __main__'s

    sys.exit(_main())
