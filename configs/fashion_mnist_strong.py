"""Fashion-MNIST with the keyed orthogonal mixing of the whole image and an MLP (the strongest measured).

Re-exports isnn_jax/configs/fashion_mnist_strong.py: an installed isnn_jax finds that one from
any directory as `--config fashion_mnist_strong`; this file keeps
`--config configs/fashion_mnist_strong.py` working.
"""

from isnn_jax.configs.fashion_mnist_strong import get_config  # noqa: F401
