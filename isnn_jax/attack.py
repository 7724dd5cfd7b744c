"""python -m isnn_jax.attack --workdir DIR --licence FILE --attacks all --out REPORT_DIR
    [--baseline_workdir DIR] [--preset default|quick] [--budget GROUP.FIELD=VALUE ...]

Attacks a protected model (parameter reading, key guessing, near keys, fine-tuning, pruning,
unlock by optimisation, permutation unlock, key estimation, partial knowledge, distillation;
isnn_jax.attacks) and writes report.json, report.md and PNG figures into REPORT_DIR. Exit codes:
0 done, 1 an attack failed (the others' results are still written), 2 bad input.
"""

import shlex
import sys

from isnn_jax.attacks.budgets import ATTACK_NAMES, PRESETS
from isnn_jax.attacks.suite import format_summary, run_from_command_line
from isnn_jax.cli.doors import ArgumentParser, command
from isnn_jax.cli.logs import setup_logging


@command
def main(argv: list[str] | None = None) -> int:
    """Run the attacks; exit 0 done, 1 an attack failed, 2 bad input (isnn_jax.cli)."""
    parser = ArgumentParser(prog="python -m isnn_jax.attack", description=__doc__)
    parser.add_argument("--workdir", required=True, help="the protected model's workdir")
    parser.add_argument("--licence", required=True,
                        help="the licence it was trained for (used only for controls)")
    parser.add_argument("--attacks", default="all",
                        help=f"'all' or a comma list of: {', '.join(ATTACK_NAMES)}")
    parser.add_argument("--out", required=True, help="folder for report.json, report.md, figures")
    parser.add_argument("--baseline_workdir", help="the unprotected baseline's workdir")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="budget preset (quick: a smoke test, numbers not quotable)")
    parser.add_argument("--budget", action="append", default=[], metavar="GROUP.FIELD=VALUE",
                        help="override one budget field, e.g. key_guessing.guesses=1000 (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_figures", action="store_true", help="skip the PNG figures")
    args = parser.parse_args(argv)
    setup_logging()
    words = sys.argv[1:] if argv is None else argv
    report = run_from_command_line(
        args.workdir, args.licence, attacks=args.attacks, out=args.out, preset=args.preset,
        overrides=args.budget, baseline_workdir=args.baseline_workdir, seed=args.seed,
        figures=not args.no_figures,
        command="python -m isnn_jax.attack " + " ".join(shlex.quote(w) for w in words))
    print(format_summary(report, args.out))
    failed = [name for name, result in report["attacks"].items() if "error" in result]
    if failed:
        print(f"error: attacks failed: {', '.join(failed)} (see report.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
