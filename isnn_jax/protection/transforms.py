"""Keyed transforms: pure, jittable `(key, images) -> images` on float32 NHWC in [0, 1].

* additive: add a bounded key-derived pattern `delta_k` (the scheme's primary transform), clip.
* shuffle: permute the pixels inside every `block_size` x `block_size` block with one
  key-derived permutation (the block-wise key-based encryption family); exactly invertible.
* shuffle_additive: the shuffle, then the additive pattern.
* mix: a keyed orthogonal mixing of the whole image, `y = Q_k (x - 1/2)`: rounds of a keyed
  permutation, keyed sign flips and an orthonormal DCT over all H*W*C values, so every output
  value depends on every pixel. The output is centred and unbounded (not in [0, 1]); exactly
  invertible. Only models that see the whole image at once (the MLP) learn under it.
* mix_sphere: the mixing scaled to one norm, `y = r Q_k (x - 1/2) / ||x - 1/2||` with
  `r = sqrt(D) / 2`. An orthogonal map keeps `||x - 1/2||`, which tells the classes apart
  (about 23% on Fashion-MNIST from the norm alone) under every key alike; the fixed norm closes
  that channel to wrong keys. Invertible up to that norm only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.fft as jfft

from isnn_jax.protection import randomness
from isnn_jax.protection.licence import TransformSpec


def check_images(images: jax.Array, spec: TransformSpec | None = None) -> None:
    """Fail early, with the fix, on arrays the transforms cannot take (shape checks only)."""
    if images.ndim != 4:
        shape = tuple(images.shape)
        if images.ndim == 3 and shape[-1] in (1, 3):  # one HWC image
            fix = "for a single HWC image add a batch axis with images[None]"
        elif images.ndim == 3:  # a batch of one-channel images without their channel axis
            fix = ("for a batch of one-channel images add the channel axis with images[..., None] "
                   "(a single HWC image takes images[None])")
        elif images.ndim == 2:
            fix = "for a single one-channel image add both axes with images[None, ..., None]"
        else:
            fix = "pass a batch of images as (batch, height, width, channels)"
        raise ValueError(f"images must be NHWC with 4 dimensions, got shape {shape}; {fix}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(
            f"images must be floating point in [0, 1], got dtype {images.dtype}; "
            "divide uint8 images by 255"
        )
    if spec is not None and "shuffle" in spec.kind:
        _, height, width, _ = images.shape
        if height % spec.block_size or width % spec.block_size:
            raise ValueError(
                f"image size {height}x{width} is not divisible by block_size {spec.block_size}; "
                "choose a block size that divides both sides"
            )


def additive_pattern(key: jax.Array, shape: tuple[int, ...], spec: TransformSpec) -> jax.Array:
    """The key's pattern `delta_k` of the given HWC shape, bounded by epsilon in every pixel."""
    key = jax.random.fold_in(key, randomness.PATTERN)
    if spec.distribution == "rademacher":
        signs = jax.random.rademacher(key, shape, dtype=jnp.float32)
        return spec.epsilon * signs
    return jax.random.uniform(key, shape, jnp.float32, -spec.epsilon, spec.epsilon)


def block_permutation(key: jax.Array, block_size: int, channels: int) -> jax.Array:
    """The key's permutation of the `block_size**2 * channels` values of one block."""
    key = jax.random.fold_in(key, randomness.SHUFFLE)
    return jax.random.permutation(key, block_size * block_size * channels)


def to_blocks(images: jax.Array, block_size: int) -> jax.Array:
    """(N, H, W, C) -> (N, H/b, W/b, b*b*C): each block's values side by side (the shuffle's unit)."""
    n, h, w, c = images.shape
    blocks = images.reshape(n, h // block_size, block_size, w // block_size, block_size, c)
    blocks = blocks.transpose(0, 1, 3, 2, 4, 5)
    return blocks.reshape(n, h // block_size, w // block_size, block_size * block_size * c)


def from_blocks(blocks: jax.Array, block_size: int, channels: int) -> jax.Array:
    """Exact inverse of `to_blocks`."""
    n, hb, wb, _ = blocks.shape
    images = blocks.reshape(n, hb, wb, block_size, block_size, channels)
    images = images.transpose(0, 1, 3, 2, 4, 5)
    return images.reshape(n, hb * block_size, wb * block_size, channels)


def block_shuffle(images: jax.Array, permutation: jax.Array, block_size: int) -> jax.Array:
    """Permute the values inside every block with the same permutation."""
    blocks = to_blocks(images, block_size)
    return from_blocks(blocks[..., permutation], block_size, images.shape[-1])


def block_unshuffle(images: jax.Array, permutation: jax.Array, block_size: int) -> jax.Array:
    """Exact inverse of `block_shuffle`."""
    inverse = jnp.argsort(permutation)
    return block_shuffle(images, inverse, block_size)


MIXING_KINDS = ("mix", "mix_sphere")  # the whole-image orthogonal mixings (centred outputs)
MIX_ROUNDS = 2  # one round leaves a public DCT last, which an observer can undo


def mix_rounds(key: jax.Array, size: int) -> list[tuple[jax.Array, jax.Array]]:
    """The key's (permutation, signs) of every mixing round over `size` values."""
    key = jax.random.fold_in(key, randomness.MIX)
    rounds = []
    for index in range(MIX_ROUNDS):
        perm_key, sign_key = jax.random.split(jax.random.fold_in(key, index))
        rounds.append((jax.random.permutation(perm_key, size),
                       jax.random.rademacher(sign_key, (size,), dtype=jnp.float32)))
    return rounds


def mix(key: jax.Array, images: jax.Array) -> jax.Array:
    """`Q_k (x - 1/2)` over each image's flattened values (an orthogonal map: norms are kept)."""
    n = images.shape[0]
    values = images.reshape(n, -1) - 0.5
    for permutation, signs in mix_rounds(key, values.shape[1]):
        values = jfft.dct(values[:, permutation] * signs, norm="ortho", axis=-1)
    return values.reshape(images.shape)


SPHERE_FLOOR = 1e-6  # an image equal to 1/2 everywhere has no direction; it maps to 0


def to_sphere(values: jax.Array) -> jax.Array:
    """Each image's D values scaled to the norm `sqrt(D) / 2`: a mean square of 1/4, the scale
    of values in [0, 1] measured from 1/2."""
    flat = values.reshape(values.shape[0], -1)
    norms = jnp.linalg.norm(flat, axis=1, keepdims=True)
    scaled = flat * (0.5 * jnp.sqrt(jnp.float32(flat.shape[1])) / jnp.maximum(norms, SPHERE_FLOOR))
    return scaled.reshape(values.shape)


def mixing_matrix(key: jax.Array, image_shape: tuple[int, ...]) -> jax.Array:
    """The key's `Q` as a (D, D) matrix (columns `Q e_i`): for controls and tests, never for
    the step (`mix` applies it in O(D log D))."""
    size = 1
    for side in image_shape:
        size *= int(side)
    basis = jnp.eye(size, dtype=jnp.float32).reshape(size, *image_shape) + 0.5
    return mix(key, basis).reshape(size, size).T


def unmix(key: jax.Array, images: jax.Array) -> jax.Array:
    """Exact inverse of `mix`: `Q_k^T y + 1/2`."""
    n = images.shape[0]
    values = images.reshape(n, -1)
    for permutation, signs in reversed(mix_rounds(key, values.shape[1])):
        values = (jfft.idct(values, norm="ortho", axis=-1) * signs)[:, jnp.argsort(permutation)]
    return values.reshape(images.shape) + 0.5


def apply_transform(spec: TransformSpec, key: jax.Array, images: jax.Array) -> jax.Array:
    """The legal input `t_k(x)` for a batch of images under one key."""
    check_images(images, spec)
    images = images.astype(jnp.float32)
    if spec.kind == "mix":
        return mix(key, images)
    if spec.kind == "mix_sphere":
        return to_sphere(mix(key, images))
    if "shuffle" in spec.kind:
        permutation = block_permutation(key, spec.block_size, images.shape[-1])
        images = block_shuffle(images, permutation, spec.block_size)
    if "additive" in spec.kind:
        pattern = additive_pattern(key, images.shape[1:], spec)
        images = jnp.clip(images + pattern, 0.0, 1.0)
    return images


def blend(spec: TransformSpec, legal: jax.Array, other: jax.Array,
          amounts: jax.Array) -> jax.Array:
    """Inputs carrying only a fraction `amounts` (one per image, in [0, 1]) of the legal signal,
    the rest from `other` (the same images under other keys): what a partly right key makes.

    For the mixing (centred, orthogonal outputs) the parts are weighted `a` and `sqrt(1 - a^2)`,
    which keeps the norm (the two parts are nearly orthogonal); for the other kinds, whose
    outputs are images in [0, 1], `a` and `1 - a` (a convex combination stays an image).
    """
    a = amounts.reshape(-1, *([1] * (legal.ndim - 1))).astype(jnp.float32)
    rest = jnp.sqrt(1.0 - a * a) if spec.kind in MIXING_KINDS else 1.0 - a
    return a * legal + rest * other


def apply_per_example(spec: TransformSpec, keys: jax.Array, images: jax.Array) -> jax.Array:
    """Each image under its own key (`keys` has one key per image): the wrong-key views."""
    check_images(images, spec)

    def one(key: jax.Array, image: jax.Array) -> jax.Array:
        return apply_transform(spec, key, image[None])[0]

    return jax.vmap(one)(keys, images)


def invert_transform(spec: TransformSpec, key: jax.Array, images: jax.Array) -> jax.Array:
    """Undo the shuffle part of a transform (the clipped additive part is not invertible)."""
    if spec.kind == "mix":
        return unmix(key, images)
    if spec.kind == "mix_sphere":
        raise ValueError("transform kind 'mix_sphere' scales every image to one norm and has no "
                         "exact inverse; only 'shuffle' and 'mix' are invertible")
    if "additive" in spec.kind:
        raise ValueError(
            f"transform kind {spec.kind!r} adds a clipped pattern and has no exact inverse; "
            "only 'shuffle' and 'mix' are invertible"
        )
    permutation = block_permutation(key, spec.block_size, images.shape[-1])
    return block_unshuffle(images, permutation, spec.block_size)
