"""The tests' tiny digits config, as a config file the CLI can load (`--config tests/tiny_config.py`).

A small model that separates legal from illegal digits within ~40 s on 2 cores.
"""

from isnn_jax.training.config import default_config
from isnn_jax.protection.licence import Licence, TransformSpec

EPSILON = 0.1  # 8x8 digits need a stronger pattern than 28x28 images to separate in 220 steps

# The licence of the resume, preemption and corruption tests (a fixed secret: reproducible runs).
RESUME_LICENCE = Licence(bytes(range(32)), "(c) Seller; Buyer; resume",
                         TransformSpec(epsilon=EPSILON))
# The licence of the one tiny protected model the trainer, attack and API tests share.
PROTECTED_LICENCE = Licence(bytes(range(200, 232)), "(c) Seller; Buyer; attack tests",
                            TransformSpec(epsilon=EPSILON))


def get_config():
    """The embedded digits config, shrunk for fast tests."""
    config = default_config()
    config.model.features = (16, 32)
    config.model.hidden = 64
    config.model.detector_features = 32
    # The additive transform (the scheme's primary one, and what the attack tests' known cases
    # are built on), not the embedded default's whole-image shuffle.
    config.licence.kind = "additive"
    config.licence.block_size = 4
    config.licence.epsilon = EPSILON
    config.train.batch_size = 64
    config.train.epochs = 10
    config.train.learning_rate = 3e-3
    config.train.warmup_steps = 5
    config.train.log_every_steps = 10
    config.train.checkpoint_every_steps = 30
    config.eval.random_licences = 20
    config.eval.near_per_class = 2
    return config


def tiny_config(data_dir: str, **train):
    """The tiny config reading TFDS files from `data_dir`, with train fields overridden."""
    config = get_config()
    config.data.data_dir = data_dir
    for name, value in train.items():
        config.train[name] = value
    return config


def short_config(data_dir: str, **train):
    """Two epochs (44 steps), checkpoints every 15 steps, no wrong-key evaluation."""
    config = tiny_config(data_dir, **{"epochs": 2, "checkpoint_every_steps": 15, **train})
    config.eval.random_licences = 0
    return config
