"""Train a protected (or, with protect=False, an unprotected baseline) classifier, then evaluate it.

python -m isnn_jax.train --workdir DIR [--config configs/fashion_mnist.py]
    (--licence FILE | --issue_licence NEW_FILE) [--config.train.epochs=3 ...]

--config also takes a packaged config by name (`--config fashion_mnist`), from any directory.

Exit codes: 0 done, 2 bad input (one `error:` line with the fix), 75 preempted by SIGTERM/SIGINT
after saving a checkpoint at the current step (rerun the same command to resume).
"""

import argparse
import sys
from pathlib import Path

import ml_collections

from isnn_jax.cli.training import resolve_licence, training_main, training_summary
from isnn_jax.training.loop import train_and_evaluate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags besides --config and its overrides."""
    parser.add_argument("--workdir", required=True, help="directory for checkpoints, metrics and "
                        "metadata (resumed if it holds a checkpoint)")
    parser.add_argument("--licence", help="an existing licence file (JSON, mode 0600)")
    parser.add_argument("--issue_licence", metavar="NEW_FILE",
                        help="issue a new licence into this new file (outside the workdir)")


def run(args: argparse.Namespace, config: ml_collections.ConfigDict) -> str:
    """Resolve the licence, train and evaluate; the summary to print."""
    workdir = Path(args.workdir)
    licence, save = resolve_licence(config, workdir, args.licence, args.issue_licence)
    return training_summary(train_and_evaluate(config, workdir, licence, before_writing=save),
                            workdir)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 done, 2 bad input, 75 preempted (isnn_jax.cli)."""
    return training_main(argv, prog="python -m isnn_jax.train", description=__doc__,
                         add_arguments=add_arguments, run=run)


if __name__ == "__main__":
    sys.exit(main())
