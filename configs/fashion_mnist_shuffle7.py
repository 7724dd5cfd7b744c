"""Fashion-MNIST with the keyed block shuffle in 7x7 blocks, then the additive pattern.

Re-exports isnn_jax/configs/fashion_mnist_shuffle7.py: an installed isnn_jax finds that one from
any directory as `--config fashion_mnist_shuffle7`; this file keeps
`--config configs/fashion_mnist_shuffle7.py` working.
"""

from isnn_jax.configs.fashion_mnist_shuffle7 import get_config  # noqa: F401
