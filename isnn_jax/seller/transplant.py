"""A buyer's protected copy made from another buyer's, without training: the key transplant.

For an invertible linear keyed transform (the whole-image mixing `mix`, or `shuffle`) and a
model whose first layer is dense over the flattened image, the seller, who holds both licences,
can rewrite that one layer so that the new model on licence k's legal inputs computes exactly
what the base computes on licence 0's: with `t_k(x) = A_k x + c_k` (A_k orthogonal) and the
base's first layer `h = t_0(x) K_0 + b_0`, the new layer is `K_k = A_k A_0^T K_0` and
`b_k = b_0 + t_0(t_k^{-1}(0)) K_0`. Every other parameter is the base's. The new model is then
as accurate on its legal inputs as the base on its own, and each illegal input of the new
model is an input the base never saw as legal (docs/workflow.md measures both, and what sharing
a base costs).

The columns are transformed as images with the transforms' own functions, so this costs
O(width * D log D) for the mixing and no D x D matrix is ever built.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from isnn_jax.protection.licence import Licence, LicenceError
from isnn_jax.protection.transforms import apply_transform, invert_transform
from isnn_jax.runtime.model import ProtectedModel

KINDS = ("mix", "mix_sphere", "shuffle")
TOLERANCE = 1e-3  # largest logit difference (relative to the logits' scale) accepted


class TransplantError(ValueError):
    """The base cannot be transplanted to the licence; the message says why and what to do."""


def first_layer(params: Any, pixels: int) -> tuple[tuple, Any, Any]:
    """(path of the dense layer reading the flattened image, its kernel, its bias)."""
    found = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = tuple(getattr(p, "key", p) for p in path)
        if keys[-1] == "kernel" and np.ndim(leaf) == 2 and np.shape(leaf)[0] == pixels:
            found.append(keys[:-1])
    if len(found) != 1:
        raise TransplantError(
            f"the base has {len(found)} dense kernels with {pixels} input rows, not one; the key "
            "transplant needs a model whose first layer is dense over the flattened image (the "
            "mlp); fine-tune from the base instead (--base without --transplant)")
    node = params
    for key in found[0]:
        node = node[key]
    return found[0], node["kernel"], node.get("bias")


def _replace(params: Any, path: tuple, layer: dict[str, Any]) -> Any:
    if not path:
        return layer
    return {**params, path[0]: _replace(params[path[0]], path[1:], layer)}


def transplant(base: ProtectedModel, base_licence: Licence, licence: Licence) -> Any:
    """The parameters of licence's model made from `base` (trained for `base_licence`)."""
    base.check_licence(base_licence)
    spec = licence.transform
    if base_licence.transform != spec:
        raise TransplantError(f"the base was trained for transform "
                              f"{base_licence.transform.to_dict()}, the licence has "
                              f"{spec.to_dict()}; issue the licence with the base's transform")
    if spec.kind not in KINDS:
        raise TransplantError(f"transform kind {spec.kind!r} is not an invertible linear map (the "
                              f"transplant needs {' or '.join(KINDS)}); fine-tune from the base "
                              "instead (--base without --transplant)")
    shape = base.image_shape
    pixels = math.prod(shape)
    path, kernel, bias = first_layer(base.params, pixels)
    kernel = jnp.asarray(kernel, jnp.float32)
    old_key, new_key = base_licence.key(), licence.key()

    # mix_sphere is the mixing times a factor of the image alone (its norm), which every key
    # shares: between two keys it is the mixing's map Q_k Q_0^T.
    linear = dataclasses.replace(spec, kind="mix") if spec.kind == "mix_sphere" else spec

    def to_new(images: jax.Array) -> jax.Array:  # t_k(t_0^{-1}(v))
        return apply_transform(linear, new_key, invert_transform(linear, old_key, images))

    def to_old(images: jax.Array) -> jax.Array:  # t_0(t_k^{-1}(v))
        return apply_transform(linear, old_key, invert_transform(linear, new_key, images))

    columns = kernel.T.reshape(-1, *shape)
    zero = jnp.zeros((1, *shape), jnp.float32)
    new_kernel = (to_new(columns) - to_new(zero)).reshape(columns.shape[0], pixels).T
    layer = dict(_node(base.params, path))
    layer["kernel"] = np.asarray(new_kernel, np.asarray(layer["kernel"]).dtype)
    if bias is not None:
        shift = to_old(zero).reshape(1, pixels) @ kernel
        layer["bias"] = np.asarray(jnp.asarray(bias) + shift[0], np.asarray(bias).dtype)
    elif np.abs(np.asarray(to_old(zero))).max() > 0:
        raise TransplantError("the base's first layer has no bias, which this transform's offset "
                              "needs; fine-tune from the base instead")
    return _replace(base.params, path, layer)


def _node(params: Any, path: tuple) -> Any:
    for key in path:
        params = params[key]
    return params


def check_transplant(base: ProtectedModel, base_licence: Licence, new: ProtectedModel,
                     licence: Licence, images: np.ndarray) -> float:
    """The largest logit difference between the new model on the licence's legal inputs and
    the base on its own, relative to the logits' scale; a TransplantError above TOLERANCE."""
    theirs = np.asarray(base.logits(images, base_licence))
    ours = np.asarray(new.logits(images, licence))
    error = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-6))
    if not error <= TOLERANCE:
        raise TransplantError(f"the transplanted model differs from the base by {error:.2e} "
                              f"(relative) on legal inputs; the base's first layer does not read "
                              "the flattened image directly. Fine-tune from the base instead")
    return error


def registry_licence_of(entries: list[tuple[Any, Licence]], fingerprint: str | None) -> Licence:
    """The registered licence whose fingerprint a base model records."""
    if fingerprint is None:
        raise LicenceError("the base is an unprotected model; the transplant needs a base "
                           "protected for a registered licence (or fine-tune from it)")
    for _, candidate in entries:
        if candidate.fingerprint() == fingerprint:
            return candidate
    raise LicenceError(f"the base was trained for licence {fingerprint}, which is not in this "
                       "registry; import it first (python -m isnn_jax.licence import)")
