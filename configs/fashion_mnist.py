"""Fashion-MNIST from the Debian package's IDX files, small CNN (docs/results.md has its numbers).

Re-exports isnn_jax/configs/fashion_mnist.py: an installed isnn_jax finds that one from any
directory as `--config fashion_mnist`; this file keeps `--config configs/fashion_mnist.py` working.
"""

from isnn_jax.configs.fashion_mnist import get_config  # noqa: F401
