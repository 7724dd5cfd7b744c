"""python -m isnn_jax.attack --workdir DIR --licence FILE --attacks all --out REPORT_DIR
    [--baseline_workdir DIR] [--preset default|quick] [--budget GROUP.FIELD=VALUE ...]

Attacks a protected model (key guessing, near keys, fine-tuning, pruning, unlock by
optimisation, permutation unlock, key estimation, partial knowledge, distillation) and writes
report.json, report.md and PNG figures into REPORT_DIR. Exit codes: 0 done, 1 an attack failed
(the others' results are still written), 2 bad input (one `error:` line with the fix).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from isnn_jax.attack.budgets import ATTACK_NAMES, PRESETS, BudgetError, apply_overrides, check_budgets
from isnn_jax.attack.report import ReportError
from isnn_jax.attack.setting import AttackSetupError
from isnn_jax.attack.suite import UnknownAttackError, resolve_attacks, run_security_evaluation
from isnn_jax.licence import LicenceError


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(prog="python -m isnn_jax.attack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "jax", "orbax", "isnn_jax.checkpoints"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        attacks = resolve_attacks(args.attacks)
        budgets = PRESETS[args.preset]()
        apply_overrides(budgets, args.budget)
        budgets.seed = args.seed
        check_budgets(budgets)
        command = "python -m isnn_jax.attack " + " ".join(
            shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
        report = run_security_evaluation(args.workdir, args.licence, attacks=attacks, out=args.out,
                                         baseline_workdir=args.baseline_workdir, budgets=budgets,
                                         seed=args.seed, command=command,
                                         figures=not args.no_figures)
    except (UnknownAttackError, BudgetError, AttackSetupError, LicenceError, ReportError,
            FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for row in report["summary"]:
        print(f"{row['quantity']:<72} {row['accuracy']:7.2%}  {row['verdict']}")
    print(f"wrote {args.out}/report.json, report.md and {len(report['figures'])} figures "
          f"in {report['seconds_total']:.0f} s")
    failed = [name for name, result in report["attacks"].items() if "error" in result]
    if failed:
        print(f"error: attacks failed: {', '.join(failed)} (see report.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
