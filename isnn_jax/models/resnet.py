"""ResNet-18 with the CIFAR stem (3x3 conv, no max-pool) for 32x32 inputs, or the ImageNet stem
(7x7 stride-2 conv, 3x3 stride-2 max-pool) for 224x224 inputs."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from isnn_jax.models.layers import Conv, Im2ColConv

CONVS = {"xla": Conv, "im2col": Im2ColConv}


def _norm(kind: str, dtype: jnp.dtype) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(num_groups=32, dtype=dtype)
    if kind == "layer":
        return nn.LayerNorm(dtype=dtype)
    raise ValueError(f"unknown norm {kind!r}; choose 'group' or 'layer' (BatchNorm is not offered: see docs/decisions.md)")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection."""

    features: int
    strides: int = 1
    norm: str = "group"
    dtype: jnp.dtype = jnp.float32
    conv: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        Conv = CONVS[self.conv]  # noqa: N806  (a layer class)
        residual = x
        y = Conv(self.features, (3, 3), (self.strides, self.strides), use_bias=False,
                    dtype=self.dtype)(x)
        y = nn.relu(_norm(self.norm, self.dtype)(y))
        y = Conv(self.features, (3, 3), use_bias=False, dtype=self.dtype)(y)
        y = _norm(self.norm, self.dtype)(y)
        if residual.shape != y.shape:
            residual = Conv(self.features, (1, 1), (self.strides, self.strides),
                               use_bias=False, dtype=self.dtype)(residual)
            residual = _norm(self.norm, self.dtype)(residual)
        return nn.relu(y + residual)


class ResNet18(nn.Module):
    """ResNet-18, CIFAR or ImageNet stem; batch-independent normalisation (GroupNorm default)."""

    num_classes: int
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    width: int = 64
    norm: str = "group"
    input_offset: bool = False  # learned per-pixel input offset, as in SmallCNN
    dtype: jnp.dtype = jnp.float32
    conv: str = "xla"  # xla | im2col: how stride-1 convolutions are computed (same parameters)
    stem: str = "cifar"  # cifar (3x3, no pool) | imagenet (7x7 stride 2, max-pool)


    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = images.astype(self.dtype)
        if self.input_offset:
            x = x + self.param("input_offset", nn.initializers.zeros, images.shape[1:],
                               jnp.float32).astype(self.dtype)  # parameters stay float32
        if self.stem == "imagenet":
            x = Conv(self.width, (7, 7), (2, 2), use_bias=False, dtype=self.dtype)(x)
            x = nn.relu(_norm(self.norm, self.dtype)(x))
            x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
        elif self.stem == "cifar":
            x = CONVS[self.conv](self.width, (3, 3), use_bias=False, dtype=self.dtype)(x)
            x = nn.relu(_norm(self.norm, self.dtype)(x))
        else:
            raise ValueError(f"unknown resnet stem {self.stem!r}; choose cifar or imagenet "
                             "(config.model.stem)")
        for stage, blocks in enumerate(self.stage_sizes):
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(self.width * 2**stage, strides, self.norm, self.dtype,
                               self.conv)(x)
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
