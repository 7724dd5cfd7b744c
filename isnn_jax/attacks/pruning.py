"""Global magnitude pruning: zero the smallest weights over all kernels, with and without licence.

One threshold over every kernel of the network (biases and the input offset are kept), at each
sparsity from the budget; the unprotected baseline, when given, is pruned the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from isnn_jax.attacks.measure import accuracy, key_accuracies_of
from isnn_jax.attacks.setting import Deadline, Setting, eval_subset
from isnn_jax.runtime.model import ProtectedModel


def _is_kernel(path: tuple) -> bool:
    return bool(path) and getattr(path[-1], "key", None) == "kernel"


def global_magnitude_prune(params: Any, sparsity: float) -> Any:
    """Zero the `sparsity` fraction of smallest-magnitude kernel weights, one global threshold."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    if sparsity == 0.0:
        return params
    leaves = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
              if _is_kernel(path)]
    magnitudes = np.sort(np.concatenate([np.abs(np.asarray(leaf)).ravel() for leaf in leaves]))
    threshold = magnitudes[int(sparsity * magnitudes.size)]
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.where(jnp.abs(leaf) < threshold, 0, leaf).astype(leaf.dtype)
        if _is_kernel(path) else leaf, params)


def kernel_sparsity(params: Any) -> float:
    """Fraction of kernel weights that are exactly zero."""
    leaves = [np.asarray(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
              if _is_kernel(path)]
    return float(sum((leaf == 0).sum() for leaf in leaves) / sum(leaf.size for leaf in leaves))


def run(setting: Setting, budget: Any, eval_images: int, deadline: Deadline) -> dict[str, Any]:
    """Accuracy with and without the licence (and the baseline's) at every sparsity."""
    images, labels = eval_subset(setting, eval_images)
    legal_key = setting.licence.key()[None]
    rows = []
    for sparsity in budget.sparsities:
        if rows and deadline.expired():
            break
        pruned = global_magnitude_prune(setting.protected.params, float(sparsity))
        target: ProtectedModel = dataclasses.replace(setting.protected, params=pruned)
        row = {"sparsity": float(sparsity), "measured_sparsity": kernel_sparsity(pruned),
               "legal_accuracy": float(key_accuracies_of(target, setting.spec, legal_key,
                                                         images, labels)[0]),
               "clean_accuracy": accuracy(target, pruned, images, labels)}
        if setting.baseline is not None:
            base = global_magnitude_prune(setting.baseline.params, float(sparsity))
            row["baseline_accuracy"] = accuracy(setting.baseline, base, images, labels)
        rows.append(row)
    return {"rows": rows, "stopped_early": len(rows) < len(budget.sparsities),
            "eval_images": int(images.shape[0]),
            "max_clean_accuracy": max(row["clean_accuracy"] for row in rows)}
