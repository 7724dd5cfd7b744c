"""ResNet-18 (CIFAR stem, GroupNorm) on CIFAR-10: a pod-sized run (docs/scaling.md).

Needs the TFDS `cifar10` data (prepared with TensorFlow installed, or copied to data_dir).
The global batch of 1024 splits over 8, 16, 32, 64 or 128 devices.
"""

import ml_collections

from isnn_jax.training.config import default_config


def get_config() -> ml_collections.ConfigDict:
    """CIFAR-10 / ResNet-18 variant of the default configuration."""
    config = default_config()
    config.data.name = "cifar10"
    config.model.name = "resnet18"
    config.model.width = 64
    config.model.norm = "group"
    config.licence.kind = "additive"  # not measured here (no CIFAR-10 offline); see docs/scaling.md
    config.train.batch_size = 1024
    config.train.epochs = 100
    config.train.learning_rate = 2e-3
    config.train.warmup_steps = 500
    config.train.log_every_steps = 100
    config.train.checkpoint_every_steps = 1000
    config.eval.batch_size = 2048
    return config
