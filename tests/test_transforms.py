import jax
import jax.numpy as jnp
import numpy as np
import pytest

from isnn_jax.protection.licence import TransformSpec
from isnn_jax.protection.transforms import (apply_per_example, apply_transform, block_permutation,
                                 block_shuffle, block_unshuffle, invert_transform)

SHAPES = [(3, 8, 8, 1), (2, 28, 28, 1), (2, 32, 32, 3)]


def images(shape):
    return jax.random.uniform(jax.random.key(0), shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_additive_is_bounded_and_in_range(licence, shape):
    x = images(shape)
    legal = apply_transform(licence.transform, licence.key(), x)
    assert legal.shape == x.shape and legal.dtype == jnp.float32
    assert float(jnp.abs(legal - x).max()) <= 0.03 + 1e-6
    assert float(legal.min()) >= 0.0 and float(legal.max()) <= 1.0
    # Away from the clip boundaries the perturbation is exactly +-epsilon.
    inside = (x > 0.05) & (x < 0.95)
    np.testing.assert_allclose(np.abs(np.asarray(legal - x))[np.asarray(inside)], 0.03, atol=1e-6)


def test_additive_clips_at_the_range_ends(licence):
    x = jnp.concatenate([jnp.zeros((1, 8, 8, 1)), jnp.ones((1, 8, 8, 1))])
    legal = apply_transform(licence.transform, licence.key(), x)
    assert float(legal.min()) == 0.0 and float(legal.max()) == 1.0


@pytest.mark.parametrize("shape", SHAPES)
def test_shuffle_is_a_bijection_with_exact_inverse(licence, shape):
    spec = TransformSpec(kind="shuffle", block_size=4)
    x = images(shape)
    shuffled = apply_transform(spec, licence.key(), x)
    assert not bool(jnp.all(shuffled == x))
    # Same multiset of values inside every block: a permutation, nothing lost or repeated.
    np.testing.assert_array_equal(np.sort(np.asarray(shuffled).ravel()), np.sort(np.asarray(x).ravel()))
    np.testing.assert_array_equal(np.asarray(invert_transform(spec, licence.key(), shuffled)),
                                  np.asarray(x))


def test_permutation_is_a_permutation(licence):
    perm = np.asarray(block_permutation(licence.key(), 4, 3))
    np.testing.assert_array_equal(np.sort(perm), np.arange(48))
    x = images((1, 8, 8, 3))
    np.testing.assert_array_equal(np.asarray(block_unshuffle(block_shuffle(x, perm, 4), perm, 4)),
                                  np.asarray(x))


def test_composed_transform_is_bounded_after_unshuffle(licence):
    spec = TransformSpec(kind="shuffle_additive", epsilon=0.05, block_size=4)
    x = images((2, 32, 32, 3))
    y = apply_transform(spec, licence.key(), x)
    perm = block_permutation(licence.key(), 4, 3)
    assert float(jnp.abs(block_unshuffle(y, perm, 4) - x).max()) <= 0.05 + 1e-6


def test_per_example_keys_match_single_key_calls(licence):
    x = images((3, 8, 8, 1))
    keys = jax.random.split(jax.random.key(3), 3)
    batched = apply_per_example(licence.transform, keys, x)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(batched[i]),
                                      np.asarray(apply_transform(licence.transform, keys[i], x[i:i + 1])[0]))


def test_transform_is_jittable_and_deterministic(licence):
    x = images((2, 28, 28, 1))
    jitted = jax.jit(lambda k, im: apply_transform(licence.transform, k, im))
    np.testing.assert_array_equal(np.asarray(jitted(licence.key(), x)),
                                  np.asarray(apply_transform(licence.transform, licence.key(), x)))


def test_bad_shapes_get_clear_errors(licence):
    with pytest.raises(ValueError, match="4 dimensions"):
        apply_transform(licence.transform, licence.key(), jnp.zeros((28, 28, 1)))
    with pytest.raises(ValueError, match="not divisible by block_size"):
        apply_transform(TransformSpec(kind="shuffle", block_size=5), licence.key(), jnp.zeros((1, 28, 28, 1)))
    with pytest.raises(ValueError, match="divide uint8 images by 255"):
        apply_transform(licence.transform, licence.key(), jnp.zeros((1, 8, 8, 1), jnp.uint8))


@pytest.mark.parametrize("shape", SHAPES)
def test_mix_is_orthogonal_keyed_dense_and_exactly_invertible(licence, shape):
    spec = TransformSpec(kind="mix")
    x = images(shape)
    mixed = apply_transform(spec, licence.key(), x)
    assert mixed.shape == x.shape and mixed.dtype == jnp.float32
    # y = Q (x - 1/2) with Q orthogonal: norms and inner products of centred images are kept.
    flat_x, flat_y = np.asarray(x - 0.5).reshape(len(x), -1), np.asarray(mixed).reshape(len(x), -1)
    np.testing.assert_allclose(flat_y @ flat_y.T, flat_x @ flat_x.T, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(invert_transform(spec, licence.key(), mixed), x, atol=1e-5)
    other = apply_transform(spec, jax.random.key(12345), x)
    # Another key's Q is an unrelated rotation: its outputs are nearly orthogonal to these.
    cos = (flat_y * np.asarray(other).reshape(len(x), -1)).sum(1) / (flat_y ** 2).sum(1)
    assert np.abs(cos).max() < 0.2
    # Every output value depends on every input value (one changed pixel moves all of them).
    poked = x.at[0, 0, 0, 0].add(0.5)
    moved = np.asarray(apply_transform(spec, licence.key(), poked) - mixed)[0]
    assert (np.abs(moved) > 1e-7).mean() > 0.99


@pytest.mark.parametrize("shape", SHAPES)
def test_mix_sphere_is_the_mix_at_one_norm_for_every_key(licence, shape):
    """The norm of `x - 1/2` survives every orthogonal key alike: mix_sphere fixes it."""
    spec = TransformSpec(kind="mix_sphere")
    x = images(shape)
    pixels = int(np.prod(shape[1:]))
    outputs = [np.asarray(apply_transform(spec, key, x)).reshape(len(x), -1)
               for key in (licence.key(), jax.random.key(12345))]
    for output in outputs:
        np.testing.assert_allclose(np.linalg.norm(output, axis=1), 0.5 * np.sqrt(pixels),
                                   rtol=1e-5)
    mixed = np.asarray(apply_transform(TransformSpec(kind="mix"), licence.key(), x))
    mixed = mixed.reshape(len(x), -1)
    np.testing.assert_allclose(outputs[0] * np.linalg.norm(mixed, axis=1, keepdims=True),
                               mixed * 0.5 * np.sqrt(pixels), rtol=1e-4, atol=1e-4)
    flat = np.full((1, *shape[1:]), 0.5, np.float32)  # no direction: mapped to zero, not NaN
    assert np.all(np.asarray(apply_transform(spec, licence.key(), jnp.asarray(flat))) == 0)
    with pytest.raises(ValueError, match="no exact inverse"):
        invert_transform(spec, licence.key(), jnp.asarray(outputs[0].reshape(x.shape)))


def test_the_mixing_matrix_is_the_mix(licence):
    from isnn_jax.protection.transforms import mixing_matrix

    x = images((3, 4, 4, 1))
    q = np.asarray(mixing_matrix(licence.key(), (4, 4, 1)))
    np.testing.assert_allclose(q @ q.T, np.eye(16), atol=1e-5)
    want = np.asarray(apply_transform(TransformSpec(kind="mix"), licence.key(), x)).reshape(3, -1)
    np.testing.assert_allclose(np.asarray(x - 0.5).reshape(3, -1) @ q.T, want, atol=1e-5)
