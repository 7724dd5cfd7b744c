"""The permutation unlock (attack for shuffle transforms) on a tiny shuffled digits model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from isnn_jax.attacks import load_setting, quick_budgets
from isnn_jax.attacks import permutation
from isnn_jax.attacks.measure import accuracy
from isnn_jax.attacks.setting import Deadline, eval_subset
from isnn_jax.protection.licence import Licence, TransformSpec
from isnn_jax.training.loop import train_and_evaluate
from isnn_jax.protection.transforms import additive_pattern, apply_transform, block_permutation, block_shuffle
from tiny_config import EPSILON, tiny_config

pytestmark = pytest.mark.slow  # trains its own models: the full run only

SPEC = TransformSpec(kind="shuffle_additive", epsilon=EPSILON, block_size=4)
LICENCE = Licence(bytes(range(100, 132)), "(c) Seller; Buyer; permutation tests", SPEC)


@pytest.fixture(scope="module")
def setting(tmp_path_factory, data_dir):
    """A tiny digits model protected by the 4x4 shuffle then the pattern (5 epochs: enough to
    tell the licence from its absence, which is all these tests need)."""
    config = tiny_config(data_dir, epochs=5, checkpoint_every_steps=1000, log_every_steps=100)
    config.licence.kind, config.licence.block_size = "shuffle_additive", 4
    config.eval.random_licences = 0
    config.eval.near_per_class = 1
    path = tmp_path_factory.mktemp("permutation") / "protected"
    train_and_evaluate(config, path, LICENCE)
    return load_setting(path, LICENCE)


def test_soft_shuffle_of_a_permutation_matrix_is_the_shuffle():
    images = jax.random.uniform(jax.random.key(0), (3, 8, 8, 2))
    perm = np.asarray(jax.random.permutation(jax.random.key(1), 4 * 4 * 2))
    matrix = permutation.permutation_matrix(perm)
    np.testing.assert_array_equal(permutation.soft_shuffle(images, jnp.asarray(matrix), 4),
                                  block_shuffle(images, jnp.asarray(perm), 4))
    np.testing.assert_array_equal(permutation.hard_permutation(matrix), perm)
    mixing = permutation.sinkhorn(jax.random.normal(jax.random.key(2), (32, 32)))
    np.testing.assert_allclose(mixing.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(mixing.sum(axis=1), 1.0, atol=1e-3)


def test_the_true_permutation_and_pattern_are_the_licence(setting):
    images, labels = eval_subset(setting, 0)
    key = LICENCE.key()
    true = np.asarray(block_permutation(key, 4, 1))
    pattern = np.asarray(additive_pattern(key, images.shape[1:], SPEC))
    np.testing.assert_array_equal(permutation.unlocked_images(images, true, pattern, 4),
                                  apply_transform(SPEC, key, jnp.asarray(images)))


@pytest.mark.slow
def test_learning_keeps_the_true_permutation_when_started_there(setting):
    """Started at the key's permutation (sharp logits) with 0 steps, the hard assignment is the
    key's; after 40 steps from there it still opens the model like the licence does."""
    images, labels = eval_subset(setting, 0)
    target = setting.protected
    true = np.asarray(block_permutation(LICENCE.key(), 4, 1))
    init = 10.0 * permutation.permutation_matrix(true)
    kwargs = dict(block_size=4, epsilon=EPSILON, additive=True, batch_size=32,
                  learning_rate=0.01, seed=0, init_logits=init)
    found, _, steps = permutation.learn_permutation(target.module, target.params, images, labels,
                                                    steps=0, **kwargs)
    assert steps == 0
    np.testing.assert_array_equal(found, true)
    found, pattern, steps = permutation.learn_permutation(target.module, target.params, images,
                                                          labels, steps=40, **kwargs)
    assert steps == 40 and float(np.abs(pattern).max()) <= EPSILON + 1e-6
    legal = accuracy(target, target.params, np.asarray(apply_transform(SPEC, LICENCE.key(),
                                                                       jnp.asarray(images))), labels)
    got = accuracy(target, target.params,
                   permutation.unlocked_images(images, found, pattern, 4), labels)
    assert (found == true).mean() > 0.9
    assert got > legal - 0.1, (got, legal)


@pytest.mark.slow
def test_the_attack_runs_and_reports(setting):
    budget = quick_budgets().permutation_unlock
    budget.steps = 20
    result = permutation.run(setting, budget, 0, Deadline(600.0))
    (row,) = result["rows"]
    assert result["block_values"] == 16 and row["steps"] == budget.steps
    assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["positions_matching_true_permutation"] <= 1
    assert row["train_images"] == 144


def test_the_attack_skips_transforms_without_a_shuffle():
    class AdditiveOnly:  # the attack reads nothing but the transform before deciding
        spec = TransformSpec(kind="additive")

    assert "no permutation" in permutation.run(AdditiveOnly(), None, 0, Deadline(1.0))["skipped"]
