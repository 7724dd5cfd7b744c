"""Key estimation from observed legal inputs: an eavesdropper averages what the buyer sends.

The eavesdropper sees N legal inputs t_k(x) (never the clean originals) and has clean images of
the same public distribution. The estimate of the pattern is epsilon * sign(mean of the legal
inputs - mean of the clean images); it is then added to new clean images like a licence.
For a transform with a shuffle the same eavesdropper is measured: averaging cannot see the
permutation, and the numbers show whether the additive estimate alone opens the model.
For the whole-image mixing `y = Q (x - 1/2)` the eavesdropper aligns second-order statistics:
the covariance of legal inputs is `Q C Q^T` for the clean covariance `C`, so matching their
eigenvectors gives `Q` up to one sign per eigenvector, which the means (first moments) or the
skewness (third moments) of the projections fix; the estimate is then applied to clean images
(for `mix_sphere`, whose legal inputs all have one norm, the clean images are scaled to it
before the covariances are compared, and the estimate's output after it).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from isnn_jax.attacks.adapter import adapted_accuracy, finish_of, linear_adapter
from isnn_jax.attacks.measure import pattern_accuracies
from isnn_jax.attacks.setting import Deadline, Setting, eval_subset
from isnn_jax.attacks.unlock import cosine
from isnn_jax.protection.transforms import MIXING_KINDS, apply_transform, mixing_matrix, to_sphere


def estimate_pattern(legal_inputs: np.ndarray, clean_mean: np.ndarray, epsilon: float) -> np.ndarray:
    """epsilon * sign(mean(legal_inputs) - clean_mean): the Rademacher pattern's estimate."""
    return (epsilon * np.sign(legal_inputs.mean(axis=0) - clean_mean)).astype(np.float32)


def estimate_mixing(legal: np.ndarray, clean: np.ndarray,
                    sphere: bool = False) -> dict[str, np.ndarray]:
    """Estimates of the mixing `Q` (D, D) from flattened legal inputs and clean images, one per
    sign rule: `U_legal diag(s) U_clean^T` with the eigenvectors sorted by eigenvalue. With
    `sphere` (the `mix_sphere` family) the clean images are scaled to its norm first, so that
    both sets differ by `Q` alone."""
    centred = clean.astype(np.float32) - 0.5
    if sphere:
        centred = np.asarray(to_sphere(jnp.asarray(centred)))
    legal, clean = legal.astype(np.float64), centred.astype(np.float64)
    mean_y, mean_x = legal.mean(axis=0), clean.mean(axis=0)
    bases = []
    for values, mean in ((legal, mean_y), (clean, mean_x)):
        centred = values - mean
        _, vectors = np.linalg.eigh(centred.T @ centred / max(1, values.shape[0] - 1))
        vectors = vectors[:, ::-1]  # largest eigenvalue first
        bases.append((vectors, mean @ vectors, ((centred @ vectors) ** 3).mean(axis=0)))
    (u_y, first_y, third_y), (u_x, first_x, third_x) = bases
    rules = {"mean": np.sign(first_y * first_x), "skewness": np.sign(third_y * third_x)}
    return {name: ((u_y * np.where(s == 0, 1.0, s)) @ u_x.T).astype(np.float32)
            for name, s in rules.items()}


def true_mixing(setting: Setting) -> np.ndarray:
    """The true `Q` of the licence (a control that needs the key)."""
    return np.asarray(mixing_matrix(setting.licence.key(), setting.protected.image_shape))


def _run_mixing(setting: Setting, budget: Any, images: np.ndarray, labels: np.ndarray,
                deadline: Deadline) -> dict[str, Any]:
    half = setting.train_images.shape[0] // 2
    observed_pool, reference = setting.train_images[:half], setting.train_images[half:]
    counts = sorted({min(int(n), half) for n in budget.observed})
    legal = np.asarray(apply_transform(setting.spec, setting.licence.key(),
                                       jnp.asarray(observed_pool[:max(counts)])))
    legal, clean = legal.reshape(legal.shape[0], -1), reference.reshape(reference.shape[0], -1)
    shape, true = setting.protected.image_shape, true_mixing(setting)
    rows = []
    for count in counts:
        if rows and deadline.expired():
            break
        row: dict[str, Any] = {"observed": count}
        for rule, q in estimate_mixing(legal[:count], clean,
                                       setting.spec.kind == "mix_sphere").items():
            row[f"accuracy_{rule}"] = adapted_accuracy(setting, linear_adapter(q, shape), images,
                                                       labels, shape[0],
                                                       finish=finish_of(setting.spec))
            row[f"alignment_{rule}"] = float(np.trace(q.T @ true) / true.shape[0])
        row["accuracy"] = max(row["accuracy_mean"], row["accuracy_skewness"])
        rows.append(row)
    return {"rows": rows, "stopped_early": len(rows) < len(counts),
            "eval_images": int(images.shape[0]), "reference_clean_images": int(reference.shape[0]),
            "estimator": "Q = U_legal diag(signs) U_clean^T (covariance eigenvectors; signs from "
                         "the projected means or skewness, the better of the two reported)"}


def run(setting: Setting, budget: Any, eval_images: int, deadline: Deadline) -> dict[str, Any]:
    """Accuracy on clean test images with the pattern estimated from N observed legal inputs."""
    images, labels = eval_subset(setting, eval_images)
    if setting.spec.kind in MIXING_KINDS:
        return _run_mixing(setting, budget, images, labels, deadline)
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
