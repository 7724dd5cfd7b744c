"""The protection report of a trained workdir, as the seller checks it before delivery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isnn_jax.evaluation.counting import plain_accuracy
from isnn_jax.evaluation.screening import evaluate_protection
from isnn_jax.protection.licence import Licence
from isnn_jax.protection.near_keys import trained_near_from_config
from isnn_jax.runtime.model import load_protected


def evaluate_workdir(workdir: str | Path, licence: Licence, *,
                     baseline_workdir: str | Path | None = None, batch_size: int = 1024,
                     **options: Any) -> dict[str, Any]:
    """Evaluate the newest checkpoint of `workdir` under its licence on the test split
    (`options` as `evaluate_protection` takes them); with a baseline workdir, also the
    unprotected accuracy and the legal accuracy's distance to it."""
    model = load_protected(workdir)
    model.check_licence(licence)
    images, labels = model.test_data()
    report = evaluate_protection(model.module, model.params, licence, images, labels,
                                 batch_size=batch_size,
                                 trained_near=trained_near_from_config(
                                     licence, model.meta.get("config", {})), **options)
    if baseline_workdir:
        baseline = load_protected(baseline_workdir)
        report["baseline_accuracy"] = plain_accuracy(baseline.module, baseline.params, images,
                                                     labels, batch_size)
        report["legal_minus_baseline"] = report["legal_accuracy"] - report["baseline_accuracy"]
    report["workdir"] = str(workdir)
    report["checkpoint_step"] = model.step
    return report
