"""A small CNN for 8x8 and 28x28 inputs (digits, MNIST, Fashion-MNIST)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from isnn_jax.models.layers import Im2ColConv


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2 (an odd last row or column is dropped, as nn.max_pool does).

    A reshape and a max instead of `nn.max_pool`: the same values, but the gradient is a
    compare-and-select that XLA fuses, where reduce-window's gradient is a select-and-scatter
    (on the CPU, pooling and its gradient took about 40% of the CNN's step that way).
    """
    n, h, w, c = x.shape
    x = x[:, :h - h % 2, :w - w % 2, :]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class SmallCNN(nn.Module):
    """Conv-ReLU-pool stages, then a dense head; no batch statistics (see docs/decisions.md).

    `detector_features` > 0 adds a dense branch over the full-resolution input: a dense layer
    sees every pixel position, so it can learn to recognise one specific keyed pattern rather
    than "some pattern is present", which convolutions followed by pooling cannot.

    `input_offset` adds a learned per-pixel offset to the input before the first convolution.
    It can learn to cancel the licence's pattern (offset = -delta): the legal input then looks
    clean to the convolutions while every other input carries visible +-epsilon noise, a
    translation-invariant cue that convolutions detect easily.
    """

    num_classes: int
    features: Sequence[int] = (32, 64)
    hidden: int = 128
    detector_features: int = 0
    input_offset: bool = False
    dtype: jnp.dtype = jnp.float32
    conv: str = "xla"  # xla (lax convolution) | im2col (patches x kernel matmul); same parameters

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = images.astype(self.dtype)
        if self.input_offset:
            offset = self.param("input_offset", nn.initializers.zeros, images.shape[1:],
                                jnp.float32)  # parameters stay float32 under any compute dtype
            x = x + offset.astype(self.dtype)
        conv = {"xla": nn.Conv, "im2col": Im2ColConv}[self.conv]
        for index, width in enumerate(self.features):
            x = conv(width, (3, 3), dtype=self.dtype, name=f"Conv_{index}")(x)
            x = nn.relu(x)
            if x.shape[1] >= 2 and x.shape[2] >= 2:
                x = max_pool_2x2(x)
        x = x.reshape(x.shape[0], -1)
        if self.detector_features:
            flat = images.astype(self.dtype).reshape(images.shape[0], -1)
            detector = nn.relu(nn.Dense(self.detector_features, dtype=self.dtype)(flat))
            x = jnp.concatenate([x, detector], axis=-1)
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))
        logits = nn.Dense(self.num_classes, dtype=self.dtype)(x)
        return logits.astype(jnp.float32)
