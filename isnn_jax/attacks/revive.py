"""Revive stolen weights before fine-tuning: re-centre every hidden unit on the thief's images.

A protected model may answer illegal inputs by switching a whole layer off: on clean images
every unit of a hidden layer has a negative pre-activation, ReLU passes nothing and no gradient
reaches the layers below, so fine-tuning from the stolen weights stays at chance (measured on
`configs/fashion_mnist_strong.py` with partial-key views: 99.8% of the second layer's units
never fire on clean images). That is gradient masking, not worthless weights. The thief's
answer keeps every stolen kernel and moves each unit's bias so that its pre-activation has
median zero over the thief's own clean images (each unit fires on half of them), layer after
layer, then fine-tunes all layers.
"""

from __future__ import annotations

import logging
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["revived", "recentred_paths"]

log = logging.getLogger("isnn_jax.attacks")


def _intermediates(module: nn.Module, params: Any, images: np.ndarray) -> dict:
    _, state = module.apply({"params": params}, jnp.asarray(images),
                            capture_intermediates=True, mutable=["intermediates"])
    return state["intermediates"]


def _keys(path: tuple) -> tuple:
    return tuple(getattr(p, "key", getattr(p, "idx", p)) for p in path)


def _flat(tree: Any) -> dict[tuple, Any]:
    return {_keys(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def recentred_paths(module: nn.Module, params: Any, images: np.ndarray,
                    head: tuple) -> list[tuple]:
    """Module paths with a bias whose output has one value per bias entry (dense and conv
    layers, norms' shifts), the head excepted: the units that can be switched off."""
    outputs = _flat(_intermediates(module, params, images[:2]))
    paths = []
    for path, leaf in _flat(params).items():
        module_path = path[:-1]
        if path[-1] != "bias" or module_path == head:
            continue
        output = outputs.get((*module_path, "__call__", 0))
        if output is not None and output.shape[-1] == leaf.shape[-1]:
            paths.append(module_path)
    return paths


def revived(module: nn.Module, params: Any, images: np.ndarray, head: tuple) -> Any:
    """`params` with every hidden unit's bias shifted so that its output's median over `images`
    (and over positions, for convolutions) is zero. One pass per layer: after pass k the first
    k layers are exactly centred, whatever the order in which the tree lists them."""
    paths = recentred_paths(module, params, images, head)
    if not paths:
        log.warning("revived: no hidden unit with a bias to re-centre; the start point is the "
                    "stolen weights as they are")
    for _ in range(len(paths)):
        outputs = _flat(_intermediates(module, params, images))

        def shift(path: tuple, leaf: Any) -> Any:
            keys = _keys(path)
            if keys[-1] != "bias" or keys[:-1] not in paths:
                return leaf
            output = np.asarray(outputs[(*keys[:-1], "__call__", 0)])
            median = np.median(output.reshape(-1, output.shape[-1]), axis=0)
            return jnp.asarray(np.asarray(leaf) - median, leaf.dtype)

        params = jax.tree_util.tree_map_with_path(shift, params)
    return params
