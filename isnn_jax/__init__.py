"""isnn_jax: input-sensitive neural networks (ISNN) in JAX.

A licence (secret + copyright text) yields a keyed transform; a protected classifier is trained
to work only on inputs carrying that transform. See `isnn_jax.api` for the public surface.
"""

__version__ = "0.1.0"
