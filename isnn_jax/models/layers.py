"""Layers shared by the models: a convolution whose input XLA keeps materialised.

On the CPU, XLA fused the recomputation of whole chains of GroupNorm-normalise, residual-add
and ReLU (up to three blocks deep) into the transposing copies that feed each weight-gradient
convolution, instead of reading the activation the forward pass had already stored: about 30%
of a ResNet-18 step went to those elementwise fusions (benchmarks/NOTES.md has the profile).
An optimisation barrier on the convolution's input makes XLA read the stored activation. The
barrier is an identity: parameters, their names and every value are those of `nn.Conv`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax


def _conv_of_materialised_input(lhs: jax.Array, rhs: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
    """`lax.conv_general_dilated` behind an optimisation barrier on its input."""
    return jax.lax.conv_general_dilated(jax.lax.optimization_barrier(lhs), rhs, *args, **kwargs)


# nn.Conv with the barrier; the class name (and so the parameter path, "Conv_0", ...) is nn.Conv's.
Conv = functools.partial(nn.Conv, conv_general_dilated_cls=lambda: _conv_of_materialised_input)
