"""The shipped configs, importable from an installed package (`--config fashion_mnist`).

Each module has `get_config()`; the top-level `configs/*.py` files of a checkout re-export them,
so `--config configs/fashion_mnist.py` and `--config fashion_mnist` name the same config.

May import `training.config` (the default they start from) and nothing above it.
"""

from collections.abc import Callable

import ml_collections

from isnn_jax.configs import (cifar10_resnet18, default, fashion_mnist, fashion_mnist_shuffle7,
                              fashion_mnist_strong, imagenet_resnet18)

NAMED: dict[str, Callable[[], ml_collections.ConfigDict]] = {
    "default": default.get_config,
    "fashion_mnist": fashion_mnist.get_config,
    "fashion_mnist_shuffle7": fashion_mnist_shuffle7.get_config,
    "fashion_mnist_strong": fashion_mnist_strong.get_config,
    "cifar10_resnet18": cifar10_resnet18.get_config,
    "imagenet_resnet18": imagenet_resnet18.get_config,
}
