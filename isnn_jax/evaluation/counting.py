"""Counting what a model gets right under many keys: one compiled call covers several keys.

The building block of every evaluation (training's final report, the attack suite, the screen):
the rank of the true label in each output, counted per key, with the views of several keys
going through the network as one batch; keys can be split over the JAX processes.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from isnn_jax.base import compilation
from isnn_jax.protection.licence import Licence, TransformSpec
from isnn_jax.protection.transforms import apply_transform

IMAGES_PER_CALL = 8192  # keys x images evaluated in one compiled call on an accelerator
# On the CPU small calls run faster per image (they stay in cache): on the Fashion-MNIST CNN,
# compiled with isnn_jax.base.compilation, 512 images per call ~22,000 img/s, 128 ~20,500,
# 4,096 ~12,000 (docs/performance.md; under XLA's default options 128 had been best).
CPU_IMAGES_PER_CALL = 512


def true_label_rank(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Rank of the true label in each output (0: the argmax, C-1: the argmin).

    Ties are broken as `argmax` breaks them (the lower class index first), so rank 0 is
    exactly "argmax == label": a constant output is right for one class only, not for all."""
    true_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    before = jnp.arange(logits.shape[-1]) < labels[:, None]
    return ((logits > true_logit) | ((logits == true_logit) & before)).sum(axis=-1)


def _rank_counts(logits: jax.Array, labels: jax.Array) -> jax.Array:
    num_classes = logits.shape[-1]
    return jax.nn.one_hot(true_label_rank(logits, labels), num_classes, dtype=jnp.int32).sum(0)


def images_per_call() -> int:
    """Keys x images one compiled evaluation call takes on this backend."""
    return CPU_IMAGES_PER_CALL if jax.default_backend() == "cpu" else IMAGES_PER_CALL


def _count_ranks(params: Any, keys: jax.Array, images: jax.Array, labels: jax.Array, *,
                 model: nn.Module, spec: TransformSpec | None) -> jax.Array:
    if spec is None:
        return _rank_counts(model.apply({"params": params}, images), labels)[None]
    # The views of every key go through the network as one batch (25-40% faster on the CPU
    # than vmapping the network over keys), then are counted per key.
    views = jax.vmap(lambda key: apply_transform(spec, key, images))(keys)
    logits = model.apply({"params": params}, views.reshape(-1, *images.shape[1:]))
    logits = logits.reshape(keys.shape[0], images.shape[0], -1)
    return jax.vmap(lambda one: _rank_counts(one, labels))(logits)


def make_rank_counter(model: nn.Module, spec: TransformSpec | None) -> Callable:
    """A jitted count, per key of a chunk, of how often the true label has each output rank.

    With `spec` None the images are used as given (one "key" row). The model and the transform
    are static arguments of one jitted function, so equal ones reuse its compilation."""
    return functools.partial(_jitted_count_ranks(), model=model, spec=spec)


@functools.cache
def _jitted_count_ranks() -> Callable:
    """One jitted `_count_ranks` per process, built on first use (it asks for the backend)."""
    return compilation.jit(_count_ranks, static_argnames=("model", "spec"))


def key_rank_rates(model: nn.Module, params: Any, spec: TransformSpec | None, keys: jax.Array | None,
                   images: np.ndarray, labels: np.ndarray, batch_size: int = 1024,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(keys, classes): the fraction of images whose true label has rank r under each key.

    Column 0 is the accuracy; the largest column is the best "pick the class at rank r" attack
    a thief could run on the outputs. `spec=None, keys=None`: the images as given. One call
    takes `images_per_call()` keys x images (several keys' views in one batch); `progress` is
    called with the licence x image evaluations each call completed."""
    counter = make_rank_counter(model, spec)
    num_images = images.shape[0]
    per_call = images_per_call()
    batch_size = min(batch_size, num_images, per_call)
    if spec is None:
        keys, keys_per_call = jnp.zeros((1,)), 1
    else:
        keys_per_call = max(1, per_call // batch_size)
    num_keys = keys.shape[0]
    counts = None
    for start in range(0, num_keys, keys_per_call):
        chunk = keys[start:start + keys_per_call]
        real = chunk.shape[0]
        pad = keys_per_call - real
        if pad and num_keys > keys_per_call:  # keep one compiled shape for every chunk
            chunk = jnp.concatenate([chunk, jnp.repeat(chunk[:1], pad)])
        total = 0
        for first in range(0, num_images, batch_size):
            batch = counter(params, chunk, images[first:first + batch_size],
                            labels[first:first + batch_size])
            total = total + batch
            if progress is not None:
                jax.block_until_ready(total)
                progress(real * min(batch_size, num_images - first))
        total = np.asarray(total)[:real]
        counts = total if counts is None else np.concatenate([counts, total])
    return counts / num_images


def across_processes(compute: Callable[[jax.Array], np.ndarray], keys: jax.Array) -> np.ndarray:
    """`compute(keys)` with the keys split over the JAX processes and the rows gathered back.

    Each process evaluates its contiguous share (padded to equal length), so a multi-host
    evaluation of N licences costs each process N / processes of the work."""
    count = jax.process_count()
    if count == 1:
        return compute(keys)
    total = keys.shape[0]
    share = -(-total // count)
    mine = keys[jax.process_index() * share:(jax.process_index() + 1) * share]
    if mine.shape[0] < share:  # only trailing shares are short; their padding is cut below
        mine = jnp.concatenate([mine, jnp.repeat(keys[:1], share - mine.shape[0])])
    gathered = np.asarray(multihost_utils.process_allgather(compute(mine)))
    return gathered.reshape(count * share, *gathered.shape[2:])[:total]


def key_accuracies(model: nn.Module, params: Any, spec: TransformSpec, keys: jax.Array,
                   images: np.ndarray, labels: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Accuracy on (images, labels) under each key in `keys` (one number per key)."""
    return key_rank_rates(model, params, spec, keys, images, labels, batch_size)[:, 0]


def plain_accuracy(model: nn.Module, params: Any, images: np.ndarray, labels: np.ndarray,
                   batch_size: int = 1024) -> float:
    """Accuracy on images exactly as given."""
    return float(key_rank_rates(model, params, None, None, images, labels, batch_size)[0, 0])


def mean_psnr(licence: Licence, images: np.ndarray) -> float:
    """Mean PSNR (dB, peak 1.0) of legal against clean images."""
    legal = np.asarray(apply_transform(licence.transform, licence.key(), jnp.asarray(images)))
    mse = ((legal - images) ** 2).reshape(images.shape[0], -1).mean(axis=1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))
