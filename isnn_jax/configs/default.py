"""Embedded default: scikit-learn's digits (no download), small CNN, additive keyed pattern."""

import ml_collections

from isnn_jax.training.config import default_config


def get_config() -> ml_collections.ConfigDict:
    """The default configuration (the same one `python -m isnn_jax.train` uses without --config)."""
    return default_config()
