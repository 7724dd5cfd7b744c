"""Protect a model for one buyer: train for the buyer's registered licence, record the model.

python -m isnn_jax.protect --registry DIR --buyer NAME --workdir DIR
    [--config configs/fashion_mnist.py] [--config.train.epochs=3 ...] [--base WORKDIR]

The licence comes from the seller's registry (it never needs to exist as a file on the training
machine); the transform fields of the config are taken from the licence. After training, the
model fingerprint (SHA-256 of the parameters) is recorded in the registry next to the licence.
With --base, training starts from the parameters of the seller's trained model in WORKDIR
(config.init_from), so each buyer costs a shorter fine-tuning run (docs/workflow.md).
Exit codes as python -m isnn_jax.train: 0 done, 2 bad input (one `error:` line), 75 preempted
after saving a checkpoint (rerun the same command to resume).
"""

import argparse
import sys

import ml_collections

from isnn_jax.cli.training import training_main
from isnn_jax.evaluation.report import format_report
from isnn_jax.seller.buyers import protect_for_buyer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags besides --config and its overrides."""
    parser.add_argument("--registry", required=True, help="the seller's licence registry directory")
    parser.add_argument("--buyer", required=True,
                        help="the buyer whose registered licence the model is trained for")
    parser.add_argument("--workdir", required=True, help="directory for checkpoints, metrics and "
                        "metadata (resumed if it holds a checkpoint)")
    parser.add_argument("--base", metavar="WORKDIR",
                        help="start from this trained model's parameters (= --config.init_from)")
    parser.add_argument("--transplant", action="store_true",
                        help="with --base: rewrite a base protected for another registered "
                             "licence for this buyer's key, exactly (mix or shuffle, dense first "
                             "layer; add --config.train.epochs=0 to skip training)")


def run(args: argparse.Namespace, config: ml_collections.ConfigDict) -> str:
    """Train for the buyer's licence and record the model; the summary to print."""
    report = protect_for_buyer(args.registry, args.buyer, config, args.workdir, base=args.base,
                               transplant_base=args.transplant)
    if report.get("stopped_early"):
        return f"stopped at step {report['step']}; rerun to resume (nothing recorded yet)"
    return (f"{format_report(report)}\nrecorded model {report['model_fingerprint'][:16]} for "
            f"buyer {args.buyer!r} in {args.registry}")


def main(argv: list[str] | None = None) -> int:
    """The same path, flags, config handling and exit codes (0, 2, 75) as isnn_jax.train."""
    return training_main(argv, prog="python -m isnn_jax.protect", description=__doc__,
                         add_arguments=add_arguments, run=run)


if __name__ == "__main__":
    sys.exit(main())
