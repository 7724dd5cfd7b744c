"""Simulated thieves in the step (protection/simulated.py): the thieves' moves are the optimiser's
own, the two gradient variants are what they say, and a run with thieves resumes bit-exactly."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from isnn_jax.protection.objective import cross_entropy, uniform_kl
from isnn_jax.runtime.model import load_protected
from isnn_jax.protection.simulated import SimulatedThieves, parse_thieves, thieves_penalty
from isnn_jax.training.config import ConfigError
from isnn_jax.training.loop import train_and_evaluate
from tiny_config import RESUME_LICENCE, short_config

MODEL = nn.Dense(3)
X = jax.random.normal(jax.random.key(0), (8, 5))
Y = jnp.asarray([0, 1, 2, 0, 1, 2, 0, 1])
PARAMS = MODEL.init(jax.random.key(1), X)["params"]


def apply(params, x):
    return MODEL.apply({"params": params}, x)


def test_one_sgd_thief_is_one_gradient_step_judged_on_the_held_out_half():
    thieves = SimulatedThieves(thieves=(("sgd", 0.5),), inner_steps=1)
    penalty, metrics = thieves_penalty(apply, PARAMS, X, Y, thieves)
    grads = jax.grad(lambda p: cross_entropy(apply(p, X[:4]), Y[:4]))(PARAMS)
    moved = jax.tree.map(lambda p, g: p - 0.5 * g, PARAMS, grads)
    np.testing.assert_allclose(penalty, uniform_kl(apply(moved, X[4:]), Y[4:]), rtol=1e-6)
    assert float(metrics["thief_accuracy"]) == float((apply(moved, X[4:]).argmax(-1) == Y[4:]).mean())


def test_first_order_gradient_is_the_gradient_at_the_thiefs_weights():
    thieves = SimulatedThieves(thieves=(("sgd", 0.5),), inner_steps=1, first_order=True)
    got = jax.grad(lambda p: thieves_penalty(apply, p, X, Y, thieves)[0])(PARAMS)
    grads = jax.grad(lambda p: cross_entropy(apply(p, X[:4]), Y[:4]))(PARAMS)
    moved = jax.tree.map(lambda p, g: p - 0.5 * g, PARAMS, grads)
    want = jax.grad(lambda p: uniform_kl(apply(p, X[4:]), Y[4:]))(moved)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, want)
    full = jax.grad(lambda p: thieves_penalty(
        apply, p, X, Y, SimulatedThieves(thieves=(("sgd", 0.5),), inner_steps=1))[0])(PARAMS)
    # Differentiating through the thief's step adds the second-order term: not the same.
    assert not np.allclose(full["kernel"], got["kernel"], rtol=1e-3)


def test_thieves_of_one_optimiser_run_side_by_side_as_if_alone():
    both = SimulatedThieves(thieves=(("adam", 1e-2), ("adam", 1e-1), ("sgd", 0.1)), inner_steps=2)
    penalty = thieves_penalty(apply, PARAMS, X, Y, both)[0]
    alone = [thieves_penalty(apply, PARAMS, X, Y, SimulatedThieves(thieves=(t,), inner_steps=2))[0]
             for t in both.thieves]
    np.testing.assert_allclose(penalty, np.mean(alone), rtol=1e-5)


def test_bad_thieves_are_named():
    assert parse_thieves(["sgd:0.05", "adam:1e-3"]) == (("sgd", 0.05), ("adam", 1e-3))
    for bad in ("rmsprop:0.1", "sgd", "adam:-1"):
        with pytest.raises(ValueError, match="OPTIMISER:RATE"):
            parse_thieves([bad])


@pytest.mark.slow
def test_a_run_with_simulated_thieves_resumes_bit_exact(tmp_path, data_dir):
    def config(**train):
        cfg = short_config(data_dir, epochs=1, checkpoint_every_steps=100, **train)
        cfg.simulated.thieves = ("sgd:0.05", "adam:1e-3")
        cfg.simulated.inner_steps = 2
        return cfg

    bad = config()
    bad.simulated.thieves = ("sgd:fast",)
    with pytest.raises(ConfigError, match="OPTIMISER:RATE"):
        train_and_evaluate(bad, tmp_path / "bad", RESUME_LICENCE)
    train_and_evaluate(config(), tmp_path / "straight", RESUME_LICENCE)
    train_and_evaluate(config(stop_after_steps=15), tmp_path / "resumed", RESUME_LICENCE)
    train_and_evaluate(config(), tmp_path / "resumed", RESUME_LICENCE)
    straight, resumed = (load_protected(tmp_path / run) for run in ("straight", "resumed"))
    assert straight.step == resumed.step == 22
    jax.tree.map(np.testing.assert_array_equal, straight.params, resumed.params)
