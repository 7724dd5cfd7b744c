"""Fashion-MNIST from the Debian package's IDX files, small CNN (docs/results.md has its numbers)."""

import ml_collections

from isnn_jax.training.config import default_config


def get_config() -> ml_collections.ConfigDict:
    """Fashion-MNIST variant of the default configuration."""
    config = default_config()
    config.data.name = "fashion_mnist_idx"
    config.licence.kind = "additive"  # the scheme's primary transform (the digits default shuffles)
    config.licence.block_size = 4
    config.model.features = (16, 32)
    config.train.epochs = 5
    config.train.learning_rate = 2e-3
    config.train.checkpoint_every_steps = 500
    config.train.log_every_steps = 100
    config.eval.near_per_class = 0  # every near licence: all 256 secret bit flips, every edit
    return config
