"""Keyed transforms: pure, jittable `(key, images) -> images` on float32 NHWC in [0, 1].

* additive: add a bounded key-derived pattern `delta_k` (the scheme's primary transform), clip.
* shuffle: permute the pixels inside every `block_size` x `block_size` block with one
  key-derived permutation (the block-wise key-based encryption family); exactly invertible.
* shuffle_additive: the shuffle, then the additive pattern.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

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


def apply_transform(spec: TransformSpec, key: jax.Array, images: jax.Array) -> jax.Array:
    """The legal input `t_k(x)` for a batch of images under one key."""
    check_images(images, spec)
    images = images.astype(jnp.float32)
    if "shuffle" in spec.kind:
        permutation = block_permutation(key, spec.block_size, images.shape[-1])
        images = block_shuffle(images, permutation, spec.block_size)
    if "additive" in spec.kind:
        pattern = additive_pattern(key, images.shape[1:], spec)
        images = jnp.clip(images + pattern, 0.0, 1.0)
    return images


def apply_per_example(spec: TransformSpec, keys: jax.Array, images: jax.Array) -> jax.Array:
    """Each image under its own key (`keys` has one key per image): the wrong-key views."""
    check_images(images, spec)

    def one(key: jax.Array, image: jax.Array) -> jax.Array:
        return apply_transform(spec, key, image[None])[0]

    return jax.vmap(one)(keys, images)


def invert_transform(spec: TransformSpec, key: jax.Array, images: jax.Array) -> jax.Array:
    """Undo the shuffle part of a transform (the clipped additive part is not invertible)."""
    if "additive" in spec.kind:
        raise ValueError(
            f"transform kind {spec.kind!r} adds a clipped pattern and has no exact inverse; "
            "only 'shuffle' is invertible"
        )
    permutation = block_permutation(key, spec.block_size, images.shape[-1])
    return block_unshuffle(images, permutation, spec.block_size)
