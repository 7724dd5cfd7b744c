"""Classifiers of one's own, outside the isnn_jax package, with BatchNorm and dropout: a CNN
and an MLP (docs/own_model.md protects the MLP on an image folder)."""

import flax.linen as nn
import jax.numpy as jnp


class BNClassifier(nn.Module):
    """Two conv + BatchNorm + ReLU + pool stages, dropout, a dense head."""

    num_classes: int
    features: tuple[int, ...] = (32, 64)
    dropout: float = 0.25
    batchnorm: bool = True  # False: the same network without BatchNorm (for comparison)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        for width in self.features:
            x = nn.Conv(width, (3, 3))(x)
            if self.batchnorm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(self.num_classes)(x)


class BNMLP(nn.Module):
    """Dense + BatchNorm + ReLU + dropout layers over the flattened image, then the head: the
    dense first layer that the whole-image mixing needs (isnn_jax.models.mlp), with state."""

    num_classes: int
    widths: tuple[int, ...] = (512, 512)
    dropout: float = 0.2
    batchnorm: bool = True  # False: the same network without BatchNorm (for comparison)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = x.reshape(x.shape[0], -1)
        for width in self.widths:
            x = nn.Dense(width)(x)
            if self.batchnorm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(x))
        return nn.Dense(self.num_classes)(x)
