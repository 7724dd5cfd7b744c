"""Partial knowledge: accuracy when the attacker's key is right to a degree c (cosine with the truth).

Additive pattern: the true Rademacher pattern with a random fraction (1 - c) / 2 of its signs
flipped, so its cosine with the true pattern is c (c = 1: the licence itself; c = 0: a random
pattern). Whole-image mixing: the legal input times c plus a random key's input times
sqrt(1 - c^2) (`transforms.blend`), so the input's cosine with the legal one is about c: what a
guessed or estimated key that is partly right gives. This maps how close a guess or an estimate
must come before the model opens (and where partial-key training puts that gate).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from isnn_jax.attacks.measure import accuracy, pattern_accuracies
from isnn_jax.attacks.setting import Deadline, Setting, eval_subset
from isnn_jax.attacks.unlock import cosine
from isnn_jax.protection.transforms import MIXING_KINDS, apply_transform, blend


def flip_signs(pattern: np.ndarray, target_cosine: float, rng: np.random.Generator) -> np.ndarray:
    """`pattern` with round((1 - c) / 2 * size) randomly chosen entries negated."""
    flat = np.asarray(pattern, np.float32).ravel().copy()
    flips = int(round((1.0 - target_cosine) / 2.0 * flat.size))
    chosen = rng.choice(flat.size, flips, replace=False)
    flat[chosen] = -flat[chosen]
    return flat.reshape(np.shape(pattern))


def run(setting: Setting, budget: Any, eval_images: int, deadline: Deadline) -> dict[str, Any]:
    """Mean accuracy over `draws` sign-flip sets at each cosine."""
    if setting.spec.kind in MIXING_KINDS:
        return mixed_rows(setting, budget, eval_images, deadline)
    if setting.spec.kind != "additive":
        return {"skipped": f"transform kind {setting.spec.kind!r} is neither a pure additive "
                           "pattern nor a mixing"}
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


def mixed_rows(setting: Setting, budget: Any, eval_images: int,
               deadline: Deadline) -> dict[str, Any]:
    """Mean accuracy over `draws` random other keys (one per draw, used on every image, as a
    guessed key is) of `c * legal + sqrt(1 - c^2) * other` at each cosine c."""
    images, labels = eval_subset(setting, eval_images)
    spec, target = setting.spec, setting.protected
    legal = np.asarray(apply_transform(spec, setting.licence.key(), jnp.asarray(images)))
    keys = jax.random.split(jax.random.key(setting.seed + 31), int(budget.draws))
    others = [np.asarray(apply_transform(spec, key, jnp.asarray(images))) for key in keys]
    rows = []
    for target_cosine in budget.cosines:
        if rows and deadline.expired():
            break
        amounts = jnp.full(images.shape[0], float(target_cosine))
        inputs = [np.asarray(blend(spec, legal, other, amounts)) for other in others]
        accuracies = np.array([accuracy(target, target.params, x, labels) for x in inputs])
        measured = np.mean([_mean_cosine(x, legal) for x in inputs])
        rows.append({"cosine": float(target_cosine), "measured_cosine": float(measured),
                     "accuracy": float(accuracies.mean()), "accuracy_min": float(accuracies.min()),
                     "accuracy_max": float(accuracies.max())})
    return {"rows": rows, "stopped_early": len(rows) < len(budget.cosines),
            "draws": int(budget.draws), "eval_images": int(images.shape[0]),
            "form": "c * legal + sqrt(1 - c^2) * (the images under a random key)"}


def _mean_cosine(inputs: np.ndarray, legal: np.ndarray) -> float:
    """Mean over images of the cosine between each input and its legal input."""
    a, b = inputs.reshape(inputs.shape[0], -1), legal.reshape(legal.shape[0], -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)))
