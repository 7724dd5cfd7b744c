"""Embedded default: scikit-learn's digits (no download), the whole-image keyed mixing, an MLP.

The same design as `fashion_mnist_strong` (docs/security.md): the licence's transform is an
orthogonal mixing of all 64 pixels, the model a multi-layer perceptron that learns under it.
The base every packaged config starts from (`training.config.default_config`) keeps the small
CNN and the shuffle, which the other configs set for themselves.
"""

import ml_collections

from isnn_jax.training.config import default_config


def get_config() -> ml_collections.ConfigDict:
    """The default configuration (the same one `python -m isnn_jax.train` uses without --config)."""
    config = default_config()
    config.licence.kind = "mix"
    config.model.name = "mlp"
    return config
