"""A multi-layer perceptron over the flattened image: the model for the whole-image mixing.

A dense first layer sees every input value with its own weight, so it learns as well on
`Q x` for any fixed orthogonal `Q` as on `x` (its initialisation is isotropic), where a
convolution needs the pixels' neighbourhoods that the keyed mixing destroys.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """Dense-ReLU layers of the given widths, then the class logits."""

    num_classes: int
    widths: Sequence[int] = (512, 512)
    dtype: jnp.dtype = jnp.float32


    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = images.astype(self.dtype).reshape(images.shape[0], -1)
        for index, width in enumerate(self.widths):
            x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f"Dense_{index}")(x))
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return logits.astype(jnp.float32)
