"""Model building blocks chosen for speed compute what the plain layers compute."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from isnn_jax.models import build_model, resolve_conv
from isnn_jax.models.cnn import max_pool_2x2
from isnn_jax.models.layers import Im2ColConv


@pytest.mark.parametrize("shape", [(2, 28, 28, 3), (2, 7, 7, 2), (1, 8, 8, 1)])
def test_reshape_max_pool_equals_nn_max_pool(shape):
    x = jax.random.normal(jax.random.key(0), shape)
    np.testing.assert_array_equal(max_pool_2x2(x), nn.max_pool(x, (2, 2), strides=(2, 2)))


@pytest.mark.slow
@pytest.mark.parametrize("features, kernel, padding", [(32, (3, 3), "SAME"), (8, (3, 3), "VALID"),
                                                       (4, (1, 1), "SAME"), (6, (3, 3), 1),
                                                       (5, (5, 3), ((2, 1), (0, 2)))])
def test_im2col_convolution_equals_nn_conv(features, kernel, padding):
    """Same parameters, same outputs, gradients (weights and input) within 1e-5 of XLA's,
    relative to their largest value."""
    x = jax.random.uniform(jax.random.key(0), (3, 12, 12, 5))
    plain = nn.Conv(features, kernel, padding=padding)
    fast = Im2ColConv(features, kernel, padding=padding)
    params = plain.init(jax.random.key(1), x)
    assert jax.tree.structure(params) == jax.tree.structure(fast.init(jax.random.key(1), x))
    np.testing.assert_allclose(fast.apply(params, x), plain.apply(params, x), atol=1e-5)

    def grads(module):
        return jax.grad(lambda p, v: (module.apply(p, v) ** 2).sum(), argnums=(0, 1))(params, x)

    for got, want in zip(jax.tree.leaves(grads(fast)), jax.tree.leaves(grads(plain))):
        assert float(jnp.abs(got - want).max()) <= 1e-5 * float(jnp.abs(want).max())


@pytest.mark.slow
def test_im2col_falls_back_to_lax_for_strided_convolutions():
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    plain, fast = nn.Conv(4, (3, 3), strides=2), Im2ColConv(4, (3, 3), strides=2)
    params = plain.init(jax.random.key(1), x)
    np.testing.assert_array_equal(fast.apply(params, x), plain.apply(params, x))


def test_conv_choice():
    assert resolve_conv("auto") == "xla"
    assert resolve_conv("im2col") == "im2col" and resolve_conv("xla") == "xla"
    with pytest.raises(ValueError, match=r"unknown model conv 'fft'; choose one of auto, xla, "
                                         r"im2col \(config.model.conv\)"):
        build_model({"name": "small_cnn", "conv": "fft"}, 10)


def test_mlp_is_built_from_the_config_and_reads_the_flattened_image():
    model = build_model({"name": "mlp", "widths": [16, 8], "conv": "auto", "features": (4,)}, 10)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    assert {k: v["kernel"].shape for k, v in params.items()} == \
        {"Dense_0": (64, 16), "Dense_1": (16, 8), "head": (8, 10)}
    assert model.apply({"params": params}, jnp.ones((3, 8, 8, 1))).shape == (3, 10)


def test_the_imagenet_stem_takes_224_pixels_to_7x7_features():
    model = build_model({"name": "resnet18", "stem": "imagenet", "width": 32}, 1000)
    x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape)))
    assert variables["params"]["Conv_0"]["kernel"].shape == (7, 7, 3, 32)
    features = jax.eval_shape(lambda v, images: model.apply(
        v, images, capture_intermediates=True)[1], variables, x)
    last = features["intermediates"]["BasicBlock_7"]["__call__"][0]
    assert last.shape == (2, 7, 7, 256)
    with pytest.raises(ValueError, match="unknown resnet stem 'vit'"):
        build_model({"name": "resnet18", "stem": "vit"}, 10).init(jax.random.key(0),
                                                                 jnp.zeros((1, 8, 8, 1)))
