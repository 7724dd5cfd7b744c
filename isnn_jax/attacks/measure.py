"""Accuracy of a network on images as given, under licence keys, or under additive patterns.

Keys go through `isnn_jax.evaluation.counting` (one batched, jitted evaluation for many keys). Patterns (an
attacker's estimate of `delta_k`, the true one rescaled, a learned perturbation) use the same
chunking: `patterns x images` evaluated per compiled call.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from isnn_jax.base import compilation
from isnn_jax.runtime.model import ProtectedModel
from isnn_jax.evaluation.counting import IMAGES_PER_CALL, key_accuracies, plain_accuracy
from isnn_jax.protection.licence import TransformSpec

__all__ = ["accuracy", "key_accuracies_of", "pattern_accuracies", "recovered", "CHANCE_NOTE"]

CHANCE_NOTE = "recovered = (attack - chance) / (legal - chance); 1.0 means the legal accuracy"


def accuracy(target: ProtectedModel, params: Any, images: np.ndarray, labels: np.ndarray,
             batch_size: int = 1024) -> float:
    """Accuracy of `params` (the target's architecture) on images exactly as given."""
    return plain_accuracy(target.module, params, images, labels, batch_size)


def key_accuracies_of(target: ProtectedModel, spec: TransformSpec, keys: jax.Array, images: np.ndarray,
                      labels: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Accuracy under each licence key (the keyed transform applied first)."""
    return key_accuracies(target.module, target.params, spec, keys, images, labels,
                          min(batch_size, images.shape[0]))


@functools.lru_cache(maxsize=8)
def _pattern_counter(module: nn.Module):
    def count(params: Any, patterns: jax.Array, images: jax.Array, labels: jax.Array) -> jax.Array:
        def one(pattern: jax.Array) -> jax.Array:
            logits = module.apply({"params": params}, jnp.clip(images + pattern, 0.0, 1.0))
            return (logits.argmax(-1) == labels).sum()

        return jax.vmap(one)(patterns)

    return compilation.jit(count)


def pattern_accuracies(target: ProtectedModel, params: Any, patterns: np.ndarray | jax.Array,
                       images: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Accuracy of clip(image + pattern) for each pattern in `patterns` (P, H, W, C)."""
    patterns = jnp.asarray(patterns, jnp.float32)
    if patterns.ndim != 4 or tuple(patterns.shape[1:]) != tuple(images.shape[1:]):
        raise ValueError(f"patterns must have shape (P, {', '.join(map(str, images.shape[1:]))}), "
                         f"got {tuple(patterns.shape)}")
    counter = _pattern_counter(target.module)
    batch_size = min(batch_size, images.shape[0])
    per_call = max(1, IMAGES_PER_CALL // batch_size)
    correct = np.zeros(patterns.shape[0], np.int64)
    for start in range(0, patterns.shape[0], per_call):
        chunk = patterns[start:start + per_call]
        real = chunk.shape[0]
        if real < per_call and patterns.shape[0] > per_call:  # one compiled shape for all chunks
            chunk = jnp.concatenate([chunk, jnp.repeat(chunk[:1], per_call - real, axis=0)])
        for first in range(0, images.shape[0], batch_size):
            hits = counter(params, chunk, jnp.asarray(images[first:first + batch_size]),
                           jnp.asarray(labels[first:first + batch_size]))
            correct[start:start + real] += np.asarray(hits)[:real]
    return correct / images.shape[0]


def recovered(attack: float, legal: float, chance: float) -> float:
    """Share of the legal accuracy's margin over chance that an attack restores."""
    margin = legal - chance
    return float((attack - chance) / margin) if margin > 1e-9 else float("nan")
