"""Partial knowledge: accuracy when the attacker's pattern has cosine similarity c with the truth.

The attacker's pattern is the true Rademacher pattern with a random fraction (1 - c) / 2 of its
signs flipped, so its cosine with the true pattern is c (c = 1: the licence itself; c = 0: a
random pattern). This maps how close a guess or an estimate must come before the model opens.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from isnn_jax.attacks.measure import pattern_accuracies
from isnn_jax.attacks.setting import Deadline, Setting, eval_subset
from isnn_jax.attacks.unlock import cosine


def flip_signs(pattern: np.ndarray, target_cosine: float, rng: np.random.Generator) -> np.ndarray:
    """`pattern` with round((1 - c) / 2 * size) randomly chosen entries negated."""
    flat = np.asarray(pattern, np.float32).ravel().copy()
    flips = int(round((1.0 - target_cosine) / 2.0 * flat.size))
    chosen = rng.choice(flat.size, flips, replace=False)
    flat[chosen] = -flat[chosen]
    return flat.reshape(np.shape(pattern))


def run(setting: Setting, budget: Any, eval_images: int, deadline: Deadline) -> dict[str, Any]:
    """Mean accuracy over `draws` sign-flip sets at each cosine."""
    if setting.spec.kind != "additive":
        return {"skipped": f"transform kind {setting.spec.kind!r} is not a pure additive pattern"}
    images, labels = eval_subset(setting, eval_images)
    true = np.asarray(setting.true_pattern())
    rng = np.random.default_rng(setting.seed + 31)
    rows = []
    for target_cosine in budget.cosines:
        if rows and deadline.expired():
            break
        patterns = np.stack([flip_signs(true, float(target_cosine), rng)
                             for _ in range(int(budget.draws))])
        accuracies = pattern_accuracies(setting.protected, setting.protected.params, patterns,
                                        images, labels)
        rows.append({"cosine": float(target_cosine),
                     "measured_cosine": float(np.mean([cosine(p, true) for p in patterns])),
                     "accuracy": float(accuracies.mean()), "accuracy_min": float(accuracies.min()),
                     "accuracy_max": float(accuracies.max())})
    return {"rows": rows, "stopped_early": len(rows) < len(budget.cosines),
            "draws": int(budget.draws), "eval_images": int(images.shape[0])}
