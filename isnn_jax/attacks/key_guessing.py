"""Key guessing: try many random licences; the true licence rides along as a control.

Every guess is screened on a few test images (cheap, noisy), then the best guesses are measured
again on the evaluation images, so the reported maximum is not the screen's luck.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from isnn_jax.attacks.measure import key_accuracies_of
from isnn_jax.attacks.setting import Deadline, Setting, eval_subset
from isnn_jax.protection.licence import random_keys

CHUNK_KEYS = 1024  # guesses screened between two deadline checks
HISTOGRAM_BINS = 50


def summarise(accuracies: np.ndarray) -> dict[str, Any]:
    """Distribution summary of accuracies: moments, quantiles and a histogram over [0, 1]."""
    counts, edges = np.histogram(accuracies, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    quantiles = {f"q{q:g}": float(np.quantile(accuracies, q / 100)) for q in (50, 90, 99, 99.9)}
    return {"count": int(accuracies.size), "mean": float(accuracies.mean()),
            "std": float(accuracies.std()), "min": float(accuracies.min()),
            "max": float(accuracies.max()), **quantiles,
            "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}}


def screen_keys(setting: Setting, keys: jax.Array, images: np.ndarray, labels: np.ndarray,
                deadline: Deadline) -> np.ndarray:
    """Accuracy of each key on the screening images, chunk by chunk until the deadline."""
    results = []
    for start in range(0, keys.shape[0], CHUNK_KEYS):
        if results and deadline.expired():
            break
        results.append(key_accuracies_of(setting.protected, setting.spec,
                                         keys[start:start + CHUNK_KEYS], images, labels))
    return np.concatenate(results)


def run(setting: Setting, budget: Any, eval_images: int, deadline: Deadline) -> dict[str, Any]:
    """Guess `budget.guesses` random licences; report their accuracy and whether the control wins."""
    images, labels = eval_subset(setting, eval_images)
    screen_x, screen_y = images[:budget.screen_images], labels[:budget.screen_images]
    control = setting.licence.key()[None]
    guesses = random_keys(setting.seed + 7919, int(budget.guesses))
    # The control is screened first, so a deadline can never leave it out.
    keys = jax.numpy.concatenate([control, guesses])
    screened = screen_keys(setting, keys, screen_x, screen_y, deadline)
    control_screen, guess_screen = float(screened[0]), screened[1:]
    top = np.argsort(-guess_screen, kind="stable")[:int(budget.confirm_top)]
    confirm_keys = jax.numpy.concatenate([control, guesses[top]])
    confirmed = key_accuracies_of(setting.protected, setting.spec, confirm_keys, images, labels)
    control_rank = int((screened > control_screen).sum()) + 1  # 1: the best screened key
    best_guess = float(confirmed[1:].max()) if top.size else float("nan")
    return {
        "guesses": int(guess_screen.size),
        "guesses_asked": int(budget.guesses),
        "stopped_early": bool(guess_screen.size < budget.guesses),
        "screen_images": int(screen_x.shape[0]),
        "eval_images": int(images.shape[0]),
        "screen": summarise(guess_screen),
        "confirmed_top": [float(a) for a in sorted(confirmed[1:], reverse=True)],
        "max_accuracy": best_guess,
        "control": {"screen_accuracy": control_screen, "accuracy": float(confirmed[0]),
                    "screen_rank": control_rank,
                    "found": bool(control_rank <= top.size + 1 and confirmed[0] >= best_guess)},
    }
