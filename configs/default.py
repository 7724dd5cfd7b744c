"""Embedded default: scikit-learn's digits (no download), small CNN, additive keyed pattern.

Re-exports isnn_jax/configs/default.py: an installed isnn_jax finds that one from any
directory as `--config default`; this file keeps `--config configs/default.py` working.
"""

from isnn_jax.configs.default import get_config  # noqa: F401
