"""What a leaked copy may go through: magnitude pruning and light fine-tuning on clean data.

Used to check that tracing survives them (tests and docs/workflow.md). The result is written
as an export whose metadata keeps only the image shape and classes: a leaked copy carries no
licence fingerprint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from isnn_jax.base.files import write_atomic
from isnn_jax.protection.licence import Licence
from isnn_jax.protection.transforms import apply_transform
from isnn_jax.runtime.export import check_new_output, export_bytes
from isnn_jax.runtime.model import load_protected

KEPT_FIELDS = ("dataset", "image_shape", "num_classes", "class_names", "input_range")


def prune(params: Any, fraction: float) -> Any:
    """Zero the `fraction` of smallest-magnitude weights in every kernel (biases are kept)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"prune fraction must lie in [0, 1), got {fraction}")

    def prune_leaf(path: tuple, leaf: jax.Array) -> jax.Array:
        if not path or getattr(path[-1], "key", None) != "kernel" or fraction == 0.0:
            return leaf
        magnitude = jnp.abs(leaf).ravel()
        cut = jnp.sort(magnitude)[int(fraction * magnitude.size)]
        return jnp.where(jnp.abs(leaf) < cut, 0.0, leaf).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(prune_leaf, params)


def fine_tune(module: nn.Module, params: Any, images: np.ndarray, labels: np.ndarray, *,
              steps: int, learning_rate: float = 1e-3, batch_size: int = 64, seed: int = 0,
              licence: Licence | None = None) -> Any:
    """`steps` of Adam on cross-entropy: over clean images (a thief without the licence), or
    over the licence's legal images (a buyer adapting the model before leaking it)."""
    tx = optax.adam(learning_rate)
    if licence is not None:
        images = np.asarray(apply_transform(licence.transform, licence.key(), jnp.asarray(images)))

    @jax.jit
    def step(state: tuple[Any, Any], batch: tuple[jax.Array, jax.Array]) -> tuple[Any, Any]:
        params, opt_state = state

        def loss(p: Any) -> jax.Array:
            logits = module.apply({"params": p}, batch[0])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()

        updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(seed)
    state = (params, tx.init(params))
    for _ in range(steps):
        chosen = rng.choice(images.shape[0], min(batch_size, images.shape[0]), replace=False)
        state = step(state, (jnp.asarray(images[chosen]), jnp.asarray(labels[chosen])))
    return state[0]


def leak_copy(workdir: str | Path, out: str | Path, *, prune_fraction: float = 0.0,
              fine_tune_steps: int = 0, learning_rate: float = 1e-3,
              fine_tune_images: int = 5000, licence: Licence | None = None,
              seed: int = 0, force: bool = False) -> dict[str, Any]:
    """Write a fine-tuned and/or pruned copy of a workdir's model to `out` as an export that
    keeps only the image shape and classes; returns what was done."""
    check_new_output(out, force)
    model = load_protected(workdir)
    params = model.params
    if fine_tune_steps:
        images, labels = model.split("train")
        params = fine_tune(model.module, params, images[:fine_tune_images],
                           labels[:fine_tune_images], steps=fine_tune_steps,
                           learning_rate=learning_rate, seed=seed, licence=licence)
    params = prune(params, prune_fraction)
    meta = {name: model.meta.get(name) for name in KEPT_FIELDS}
    write_atomic(out, export_bytes(model.module, params, model.image_shape, meta))
    return {"leaked_copy": str(out), "pruned_fraction": prune_fraction,
            "fine_tune_steps": fine_tune_steps,
            "fine_tuned_on": "legal images" if licence is not None else "clean images"}
