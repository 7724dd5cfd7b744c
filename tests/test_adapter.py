"""The input adapter attack: started at the true key it is the legal transform; trained from
the identity on the thief's images it learns a working one for an additive key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from isnn_jax.attacks import adapter
from isnn_jax.attacks.budgets import quick_budgets
from isnn_jax.attacks.setting import Deadline, eval_subset, thief_data
from isnn_jax.protection.licence import Licence, TransformSpec
from isnn_jax.protection.transforms import additive_pattern, apply_transform, block_permutation


@pytest.mark.parametrize("kind", adapter.KINDS)
def test_adapter_at_the_true_key_is_the_legal_transform(kind):
    spec = TransformSpec(kind="shuffle_additive", epsilon=0.1, block_size=4)
    licence = Licence.issue("(c) Seller; licensed to Buyer; licence 3", spec)
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(5, 8, 12, 1)), jnp.float32)
    start = adapter.initial_adapter(kind, (8, 12, 1), 4,
                                    permutation=np.asarray(block_permutation(licence.key(), 4, 1)),
                                    offset=np.asarray(additive_pattern(licence.key(), (8, 12, 1),
                                                                       spec)))
    np.testing.assert_allclose(adapter.adapt(start, images, 4),
                               apply_transform(spec, licence.key(), images), atol=1e-6)
    identity = adapter.initial_adapter(kind, (8, 12, 1), 4)
    np.testing.assert_array_equal(adapter.adapt(identity, images, 4), images)


@pytest.mark.slow
def test_adapter_keeps_the_legal_accuracy_at_the_true_pattern_and_learns_one(attack_setting):
    setting = attack_setting
    images, labels = eval_subset(setting, 0)
    key, spec = setting.licence.key(), setting.spec
    block = spec.block_size
    legal = setting.protected.predict(np.asarray(apply_transform(spec, key, jnp.asarray(images))))
    truth = adapter.initial_adapter("shared", setting.protected.image_shape, block,
                                    offset=np.asarray(setting.true_pattern()))
    assert adapter.adapted_accuracy(setting, truth, images, labels, block) == \
        pytest.approx(float((legal == labels).mean()), abs=1e-9)
    identity = adapter.initial_adapter("shared", setting.protected.image_shape, block)
    clean = adapter.adapted_accuracy(setting, identity, images, labels, block)
    data = thief_data(setting, 0.2, 0, 0.2)
    trained, record = adapter.train_adapter(setting, identity, data, block_size=block, steps=60,
                                            batch_size=32, learning_rate=1e-2, evaluate_every=20,
                                            seed=0)
    assert record["curve"][0] == (0, record["curve"][0][1]) and record["steps"] == 60
    assert record["best_validation"] == max(acc for _, acc in record["curve"])
    assert not jax.tree_util.tree_all(jax.tree_util.tree_map(
        lambda a, b: bool(np.array_equal(a, b)), trained, identity))
    # The tiny model's key is an additive pattern: an offset learned from 290 clean images
    # unlocks it well above its clean accuracy (measured: clean ~0.2, adapted ~0.8).
    assert adapter.adapted_accuracy(setting, trained, images, labels, block) > clean + 0.3


@pytest.mark.slow
def test_adapter_attack_reports_every_draw_and_kind(attack_setting):
    budget = quick_budgets().input_adapter
    budget.update(kinds=("shared", "per_position"), steps=10, evaluate_every=10)
    result = adapter.run(attack_setting, budget, 200, Deadline(600.0))
    assert [(r["fraction"], r["kind"]) for r in result["rows"]] == [(0.1, "shared"),
                                                                   (0.1, "per_position")]
    for row in result["rows"]:
        assert row["validation"] == max(r["best_validation"] for r in row["runs"].values())
        assert 0.0 <= row["accuracy"] <= 1.0
    assert result["block_size"] == attack_setting.spec.block_size
