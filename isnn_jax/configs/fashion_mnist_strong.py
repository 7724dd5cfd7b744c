"""Fashion-MNIST with the keyed orthogonal mixing of the whole image and an MLP.

The licence's transform is `Q_k (x - 1/2)` over all 784 values (isnn_jax.protection.transforms):
no block is left for a per-block map or permutation to learn, no pattern for an average to
find, and the stolen first layer is `W Q_k`, useless on clean images without `Q_k`. The MLP
learns under it as well as on clean images. Partial-key views (a fraction a <= 1/2 of the legal
input, the rest another key's, trained as illegal) make the model answer only to (nearly) the
whole legal signal: they took the best of 10,000 random licences below 15% and weakened the
eavesdropper's estimate. Measured against the whole attack protocol in docs/security.md.
"""

import ml_collections

from isnn_jax.configs import fashion_mnist


def get_config() -> ml_collections.ConfigDict:
    """The Fashion-MNIST config with the `mix` transform and the MLP."""
    config = fashion_mnist.get_config()
    config.licence.kind = "mix"
    config.model.name = "mlp"
    config.model.widths = (512, 512)
    config.train.epochs = 10
    config.train.learning_rate = 1e-3
    config.objective.w_partial = 1.0
    return config
