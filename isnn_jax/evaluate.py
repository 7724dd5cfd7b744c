"""Evaluate a protected model: legal, clean, wrong-key and near-key accuracy, and PSNR.

python -m isnn_jax.evaluate --workdir DIR --licence FILE [--baseline_workdir DIR] [--out FILE]

Every random and near licence is screened on a subset of the test split and the best of each
group confirmed on the whole split (isnn_jax.evaluation.screening); --exhaustive measures every
licence on every image.
"""

import sys
from pathlib import Path

from isnn_jax.base.files import write_json
from isnn_jax.cli.doors import ArgumentParser, command
from isnn_jax.cli.logs import setup_logging
from isnn_jax.evaluation.report import format_report
from isnn_jax.protection.licence import Licence
from isnn_jax.seller.evaluate import evaluate_workdir
from isnn_jax.training.config import default_config


@command
def main(argv: list[str] | None = None) -> int:
    """Evaluate a workdir's newest checkpoint and write JSON (errors: isnn_jax.cli)."""
    parser = ArgumentParser(prog="python -m isnn_jax.evaluate", description=__doc__)
    ev = default_config().eval  # the trainer's own final evaluation settings
    parser.add_argument("--workdir", required=True, help="trained workdir (protected model)")
    parser.add_argument("--licence", required=True, help="the buyer's licence file")
    parser.add_argument("--baseline_workdir", help="workdir of the unprotected baseline")
    parser.add_argument("--random_licences", type=int, default=1000,
                        help="random licences whose accuracy is measured (default 1000)")
    parser.add_argument("--near_per_class", type=int, default=32,
                        help="near keys per edit class (0: every edit)")
    parser.add_argument("--seed", type=int, default=1234,
                        help="seed of the random licences and the near-key choice")
    parser.add_argument("--batch_size", type=int, default=1024,
                        help="images per evaluation batch (lower it if memory runs out)")
    parser.add_argument("--screen_images", type=int, default=ev.screen_images,
                        help="test images every licence is screened on (0: all)")
    parser.add_argument("--confirm_top", type=int, default=ev.confirm_top,
                        help="best screened licences per group re-measured on the whole split")
    parser.add_argument("--exhaustive", action="store_true",
                        help="every licence on every test image (slow; checks the screen)")
    parser.add_argument("--out", help="JSON output (default: WORKDIR/evaluation.json)")
    args = parser.parse_args(argv)
    setup_logging()
    out = Path(args.out) if args.out else Path(args.workdir) / "evaluation.json"
    report = evaluate_workdir(
        args.workdir, Licence.load(args.licence), baseline_workdir=args.baseline_workdir,
        batch_size=args.batch_size, random_licences=args.random_licences, seed=args.seed,
        near_per_class=args.near_per_class, screen_images=args.screen_images,
        confirm_top=args.confirm_top, exhaustive=args.exhaustive)
    write_json(out, report)
    print(f"{format_report(report)}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
