"""Key estimation from observed legal inputs: an eavesdropper averages what the buyer sends.

The eavesdropper sees N legal inputs t_k(x) (never the clean originals) and has clean images of
the same public distribution. The estimate of the pattern is epsilon * sign(mean of the legal
inputs - mean of the clean images); it is then added to new clean images like a licence.
For a transform with a shuffle the same eavesdropper is measured: averaging cannot see the
permutation, and the numbers show whether the additive estimate alone opens the model.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from isnn_jax.attacks.measure import pattern_accuracies
from isnn_jax.attacks.setting import Deadline, Setting, eval_subset
from isnn_jax.attacks.unlock import cosine
from isnn_jax.protection.transforms import apply_transform


def estimate_pattern(legal_inputs: np.ndarray, clean_mean: np.ndarray, epsilon: float) -> np.ndarray:
    """epsilon * sign(mean(legal_inputs) - clean_mean): the Rademacher pattern's estimate."""
    return (epsilon * np.sign(legal_inputs.mean(axis=0) - clean_mean)).astype(np.float32)


def run(setting: Setting, budget: Any, eval_images: int, deadline: Deadline) -> dict[str, Any]:
    """Accuracy on clean test images with the pattern estimated from N observed legal inputs."""
    images, labels = eval_subset(setting, eval_images)
    # The eavesdropper's traffic and its own clean images are disjoint halves of the train split.
    half = setting.train_images.shape[0] // 2
    observed_pool, reference = setting.train_images[:half], setting.train_images[half:]
    counts = sorted({min(int(n), half) for n in budget.observed})
    legal = np.asarray(apply_transform(setting.spec, setting.licence.key(),
                                       jnp.asarray(observed_pool[:max(counts)])))
    clean_mean = reference.mean(axis=0)
    true = np.asarray(setting.true_pattern()) if "additive" in setting.spec.kind else None
    estimates, done = [], []
    for count in counts:
        if estimates and deadline.expired():
            break
        estimates.append(estimate_pattern(legal[:count], clean_mean, setting.spec.epsilon))
        done.append(count)
    accuracies = pattern_accuracies(setting.protected, setting.protected.params,
                                    np.stack(estimates), images, labels)
    rows = [{"observed": n, "accuracy": float(a)} for n, a in zip(done, accuracies)]
    if true is not None:
        for row, estimate in zip(rows, estimates):
            row["cosine_with_true_pattern"] = cosine(estimate, true)
            row["sign_agreement"] = float((np.sign(estimate) == np.sign(true)).mean())
    return {"rows": rows, "stopped_early": len(done) < len(counts),
            "eval_images": int(images.shape[0]), "reference_clean_images": int(reference.shape[0]),
            "estimator": "epsilon * sign(mean(observed legal) - mean(own clean images))"}
