"""Fashion-MNIST from the Debian package's IDX files, small CNN."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Fashion-MNIST variant of the default configuration."""
    config = default.get_config()
    config.data.name = "fashion_mnist_idx"
    config.train.epochs = 4
    config.train.learning_rate = 1e-3
    config.train.checkpoint_every_steps = 1000
    config.train.log_every_steps = 100
    return config
