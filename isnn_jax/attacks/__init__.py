"""Security evaluation of a protected model: every attack of the threat model, one report.

    from isnn_jax.attacks import run_security_evaluation
    report = run_security_evaluation("workdir", "buyer.licence.json", attacks="all",
                                     out="security_report", baseline_workdir="baseline_workdir")

or `python -m isnn_jax.attack --workdir DIR --licence FILE --attacks all --out REPORT_DIR`.

May import `runtime`, `training`, `evaluation`, `protection`, `models`, `data` and `base`;
never `seller` (the two tool packages are independent) or the command line.
"""

from isnn_jax.attacks.budgets import (ATTACK_NAMES, BudgetError, apply_overrides, default_budgets,
                                     quick_budgets)
from isnn_jax.attacks.setting import AttackSetupError, Setting, load_setting
from isnn_jax.attacks.suite import (ATTACKS, UnknownAttackError, evaluate_attacks, resolve_attacks,
                                   run_security_evaluation)

__all__ = ["ATTACKS", "ATTACK_NAMES", "AttackSetupError", "BudgetError", "Setting",
           "UnknownAttackError", "apply_overrides", "default_budgets", "evaluate_attacks",
           "load_setting", "quick_budgets", "resolve_attacks", "run_security_evaluation"]
