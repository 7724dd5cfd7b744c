"""Starting from a trained model (config.init_from, protect --base): the base's parameters are
the run's first parameters, and every mismatch is named."""

import numpy as np
import pytest

from isnn_jax.training.config import ConfigError
from isnn_jax.training.init_from import graft

FRESH = {"Dense_0": {"kernel": np.zeros((4, 3), np.float32), "bias": np.zeros(3, np.float32)},
         "head": {"kernel": np.zeros((3, 10), np.float32), "bias": np.zeros(10, np.float32)}}


def _base(classes=10, hidden=3):
    rng = np.random.default_rng(0)
    return {"Dense_0": {"kernel": rng.random((4, hidden)), "bias": rng.random(hidden)},
            "head": {"kernel": rng.random((hidden, classes)), "bias": rng.random(classes)}}


def test_every_leaf_comes_from_the_base_in_the_fresh_dtype():
    base = _base()
    params, head = graft(FRESH, base, num_classes=10, new_head=False)
    assert head == []
    np.testing.assert_array_equal(params["Dense_0"]["kernel"], base["Dense_0"]["kernel"]
                                  .astype(np.float32))
    assert params["head"]["bias"].dtype == np.float32


def test_a_head_of_another_class_count_is_refused_unless_asked_then_kept_fresh():
    base = _base(classes=5)
    with pytest.raises(ConfigError, match="another class count.*head/bias.*init_new_head=True"):
        graft(FRESH, base, num_classes=10, new_head=False)
    params, head = graft(FRESH, base, num_classes=10, new_head=True)
    assert head == ["head/bias", "head/kernel"]
    np.testing.assert_array_equal(params["head"]["kernel"], 0.0)
    np.testing.assert_array_equal(params["Dense_0"]["bias"], base["Dense_0"]["bias"]
                                  .astype(np.float32))


@pytest.mark.parametrize("base, words", [
    (_base(hidden=5), ["shapes differ", "Dense_0/bias (5,) -> (3,)"]),
    ({"Dense_0": _base()["Dense_0"]}, ["the base lacks head/bias, head/kernel"]),
    ({**_base(), "extra": {"kernel": np.zeros(2)}}, ["the model lacks extra/kernel"]),
])
def test_a_base_of_another_architecture_is_named_path_by_path(base, words):
    with pytest.raises(ConfigError) as err:
        graft(FRESH, base, num_classes=10, new_head=True)
    for word in words:
        assert word in str(err.value)


def test_a_run_from_a_base_starts_at_its_parameters(protected_run, data_dir, tmp_path):
    """The warm-up's first learning rate is 0, so one step leaves the base's parameters as they
    were: the checkpoint after it holds exactly the base (given as a workdir, then as its
    checkpoint directory)."""
    import jax
    from tiny_config import PROTECTED_LICENCE, tiny_config
    from isnn_jax.runtime.model import load_protected
    from isnn_jax.training.loop import train_and_evaluate

    base_dir = protected_run[0]
    base = load_protected(base_dir)
    for index, source in enumerate([base_dir, base_dir / "checkpoints"]):
        config = tiny_config(data_dir, stop_after_steps=1)
        config.init_from = str(source)
        workdir = tmp_path / f"w{index}"
        assert train_and_evaluate(config, workdir, PROTECTED_LICENCE)["stopped_early"]
        for a, b in zip(jax.tree.leaves(load_protected(workdir).params),
                        jax.tree.leaves(base.params)):
            np.testing.assert_array_equal(a, b)
    config = tiny_config(data_dir)
    config.init_from = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="does not exist"):
        train_and_evaluate(config, tmp_path / "w3", PROTECTED_LICENCE)
    assert not (tmp_path / "w3").exists()
