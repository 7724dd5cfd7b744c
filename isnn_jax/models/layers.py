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


def _same_pads(window: int) -> tuple[int, int]:
    total = window - 1
    return total // 2, total - total // 2


def _im2col_conv(lhs: jax.Array, rhs: jax.Array, window_strides: Any, padding: Any,
                 lhs_dilation: Any = None, rhs_dilation: Any = None,
                 dimension_numbers: Any = None, feature_group_count: int = 1,
                 precision: Any = None, preferred_element_type: Any = None) -> jax.Array:
    """A stride-1 NHWC x HWIO convolution as one matmul over the input's patches.

    The patches are the kh*kw shifted copies of the padded input side by side, so the forward
    pass is [N*H*W, kh*kw*Cin] x [kh*kw*Cin, Cout] and, by autodiff, the weight gradient is one
    matmul with N*H*W as the contraction: shapes XLA's CPU matmul runs well, where its direct
    convolution of few channels does not (benchmarks/NOTES.md). Anything else goes to lax.
    """
    simple = (tuple(window_strides) == (1, 1) and feature_group_count == 1
              and not any(d != 1 for d in (lhs_dilation or (1, 1)))
              and not any(d != 1 for d in (rhs_dilation or (1, 1)))
              and lhs.ndim == 4 and _is_nhwc(dimension_numbers))
    if not simple:
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                            rhs_dilation, dimension_numbers, feature_group_count,
                                            precision=precision,
                                            preferred_element_type=preferred_element_type)
    kh, kw, cin, cout = rhs.shape
    n, h, w, _ = lhs.shape
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID"):
            raise ValueError(f"unsupported padding {padding!r}")
        pads = ((_same_pads(kh), _same_pads(kw)) if padding == "SAME"
                else ((0, 0), (0, 0)))
    else:
        pads = tuple(tuple(p) for p in padding)
    padded = jax.numpy.pad(lhs, ((0, 0), pads[0], pads[1], (0, 0)))
    out_h, out_w = padded.shape[1] - kh + 1, padded.shape[2] - kw + 1
    patches = jax.numpy.concatenate(
        [padded[:, i:i + out_h, j:j + out_w, :] for i in range(kh) for j in range(kw)], axis=-1)
    out = jax.numpy.dot(patches.reshape(-1, kh * kw * cin), rhs.reshape(kh * kw * cin, cout),
                        precision=precision, preferred_element_type=preferred_element_type)
    return out.reshape(n, out_h, out_w, cout)


def _is_nhwc(dimension_numbers: Any) -> bool:
    if dimension_numbers is None:
        return False
    lhs_spec, rhs_spec, out_spec = (dimension_numbers.lhs_spec, dimension_numbers.rhs_spec,
                                    dimension_numbers.out_spec)
    return tuple(lhs_spec) == (0, 3, 1, 2) and tuple(rhs_spec) == (3, 2, 0, 1) and \
        tuple(out_spec) == (0, 3, 1, 2)


# nn.Conv computed by im2col + matmul; parameters, names and values are nn.Conv's.
Im2ColConv = functools.partial(nn.Conv, conv_general_dilated_cls=lambda: _im2col_conv)
