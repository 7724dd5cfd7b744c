"""Modules of a user's own, outside the isnn_jax package, for tests/test_own_model.py."""

import flax.linen as nn
from flax import nnx


class TinyBN(nn.Module):
    """A convolution, BatchNorm, dropout and a head: the smallest stateful classifier."""

    num_classes: int
    width: int = 8
    rate: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.width, (3, 3))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.5)(x))
        x = nn.Dropout(self.rate, deterministic=not train)(x.reshape(x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)


def tiny_mlp(classes: int = 10):
    """A function returning a module (no num_classes argument: `classes` set by kwargs)."""
    return nn.Sequential([lambda x: x.reshape(x.shape[0], -1), nn.Dense(32), nn.relu,
                          nn.Dense(classes)])


class NnxBN(nnx.Module):
    """An nnx module with BatchNorm and dropout."""

    def __init__(self, num_classes: int, pixels: int = 64, *, rngs: nnx.Rngs):
        self.norm = nnx.BatchNorm(pixels, momentum=0.5, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.head = nnx.Linear(pixels, num_classes, rngs=rngs)

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        return self.head(self.drop(self.norm(x)))


NOT_A_MODEL = 3
