"""The security evaluation: run the chosen attacks on one protected model and collect a report."""

from __future__ import annotations

import difflib
import logging
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import ml_collections
import numpy as np

from isnn_jax.attacks import (adapter, distillation, estimation, fine_tuning, key_guessing, near_key_guessing,
                             parameters, partial_knowledge, permutation, pruning, unlock)
from isnn_jax.attacks.budgets import (ATTACK_NAMES, PRESETS, apply_overrides, check_budgets,
                                      default_budgets)
from isnn_jax.attacks.measure import accuracy, key_accuracies_of
from isnn_jax.attacks.report import prepare_output, publish
from isnn_jax.attacks.setting import Deadline, Setting, eval_subset, load_setting
from isnn_jax.attacks.summary import headline

log = logging.getLogger("isnn_jax.attacks")

REPORT_FORMAT = "isnn-security-report/1"
ATTACKS: dict[str, Callable[..., dict[str, Any]]] = {
    "parameter_reading": parameters.run,
    "key_guessing": key_guessing.run,
    "near_keys": near_key_guessing.run,
    "fine_tuning": fine_tuning.run,
    "pruning": pruning.run,
    "unlock_by_optimisation": unlock.run,
    "permutation_unlock": permutation.run,
    "input_adapter": adapter.run,
    "estimation": estimation.run,
    "partial_knowledge": partial_knowledge.run,
    "distillation": distillation.run,
}
assert tuple(ATTACKS) == ATTACK_NAMES


class UnknownAttackError(ValueError):
    """An attack name is not one of ATTACKS; the message lists them."""


def resolve_attacks(names: str | list[str] | tuple[str, ...]) -> list[str]:
    """Attack names from 'all', a comma list or a list; unknown names raise with a suggestion."""
    if isinstance(names, str):
        names = [name for name in names.split(",")]
    chosen: list[str] = []
    for name in (n.strip() for n in names):
        if name == "all":
            chosen.extend(ATTACK_NAMES)
            continue
        if name not in ATTACKS:
            close = difflib.get_close_matches(name, ATTACK_NAMES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UnknownAttackError(f"unknown attack {name!r}{hint}; choose 'all' or any of "
                                     f"{', '.join(ATTACK_NAMES)}")
        chosen.append(name)
    if not chosen:
        raise UnknownAttackError(f"no attack named; choose 'all' or any of {', '.join(ATTACK_NAMES)}")
    return list(dict.fromkeys(chosen))


def reference_accuracies(setting: Setting, eval_images: int) -> dict[str, Any]:
    """Legal, clean and baseline accuracy on the evaluation images, and chance."""
    images, labels = eval_subset(setting, eval_images)
    legal = key_accuracies_of(setting.protected, setting.spec, setting.licence.key()[None],
                              images, labels)[0]
    counts = np.bincount(labels, minlength=setting.protected.num_classes)
    reference = {"eval_images": int(images.shape[0]), "legal_accuracy": float(legal),
                 "clean_accuracy": accuracy(setting.protected, setting.protected.params, images,
                                            labels),
                 "chance": float(counts.max() / counts.sum())}
    if setting.baseline is not None:
        reference["baseline_accuracy"] = accuracy(setting.baseline, setting.baseline.params,
                                                  images, labels)
    return reference


def evaluate_attacks(setting: Setting, attacks: list[str],
                     budgets: ml_collections.ConfigDict | None = None) -> dict[str, Any]:
    """Run `attacks` on a loaded setting; the report dict (JSON-ready, no secret in it)."""
    budgets = default_budgets() if budgets is None else budgets
    check_budgets(budgets)
    started = time.perf_counter()
    eval_images = int(budgets.eval_images)
    target = setting.protected
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "model": {"workdir": target.source, "checkpoint_step": target.step,
                  "licence_fingerprint": setting.licence.fingerprint(),
                  "transform": setting.spec.to_dict(), "image_shape": list(target.image_shape),
                  "num_classes": target.num_classes,
                  "train_images": int(setting.train_images.shape[0]),
                  "test_images": int(setting.test_images.shape[0])},
        "baseline": ({"workdir": setting.baseline.source, "checkpoint_step": setting.baseline.step}
                     if setting.baseline is not None else None),
        "budgets": budgets.to_dict(),
        "attacks_run": list(attacks),
    }
    report["reference"] = reference_accuracies(setting, eval_images)
    log.info("reference: legal %.2f%%, clean %.2f%%", 100 * report["reference"]["legal_accuracy"],
             100 * report["reference"]["clean_accuracy"])
    report["attacks"] = {}
    for name in attacks:
        budget = budgets[name]
        deadline = Deadline(float(budget.max_seconds))
        log.info("attack %s: started (time limit %.0f s)", name, budget.max_seconds)
        try:
            result = ATTACKS[name](setting, budget, eval_images, deadline)
        except Exception as err:  # one failed attack must not lose the others' results
            log.error("attack %s failed: %s", name, err)
            result = {"error": f"{err.__class__.__name__}: {err}",
                      "traceback_tail": traceback.format_exc().splitlines()[-3:]}
        result["seconds"] = round(deadline.elapsed(), 2)
        report["attacks"][name] = result
        log.info("attack %s: done in %.1f s", name, result["seconds"])
    report["summary"] = headline(report)
    report["seconds_total"] = round(time.perf_counter() - started, 2)
    return report


def run_security_evaluation(workdir: str | Path, licence: Any, *, attacks: Any = "all",
                            out: str | Path | None = None, baseline_workdir: str | Path | None = None,
                            budgets: ml_collections.ConfigDict | None = None, seed: int = 0,
                            command: str | None = None, figures: bool = True) -> dict[str, Any]:
    """Load, attack and (with `out`) write report.json, report.md and figures atomically."""
    names = resolve_attacks(attacks)
    budgets = default_budgets() if budgets is None else budgets
    check_budgets(budgets)
    staging = prepare_output(out) if out is not None else None
    try:
        setting = load_setting(workdir, licence, baseline_workdir, seed=seed)
        report = evaluate_attacks(setting, names, budgets)
        report["seed"] = seed
        if command:
            report["command"] = command
        if staging is not None:
            publish(report, staging, Path(out), figures=figures,
                    secrets=[setting.licence.secret, setting.licence.key_bytes()])
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return report


def run_from_command_line(workdir: str | Path, licence: Any, *, attacks: str, out: str | Path,
                          preset: str, overrides: list[str], baseline_workdir: str | Path | None,
                          seed: int, figures: bool, command: str) -> dict[str, Any]:
    """`run_security_evaluation` with the budgets of a preset and GROUP.FIELD=VALUE overrides
    (checked before anything is loaded)."""
    names = resolve_attacks(attacks)
    budgets = PRESETS[preset]()
    apply_overrides(budgets, overrides)
    budgets.seed = seed
    check_budgets(budgets)
    return run_security_evaluation(workdir, licence, attacks=names, out=out,
                                   baseline_workdir=baseline_workdir, budgets=budgets, seed=seed,
                                   command=command, figures=figures)


def format_summary(report: dict[str, Any], out: str | Path) -> str:
    """The headline rows and where the report was written."""
    rows = [f"{row['quantity']:<72} {row['accuracy']:7.2%}  {row['verdict']}"
            for row in report["summary"]]
    rows.append(f"wrote {out}/report.json, report.md and {len(report['figures'])} figures "
                f"in {report['seconds_total']:.0f} s")
    return "\n".join(rows)
