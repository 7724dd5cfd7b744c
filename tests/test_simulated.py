"""Simulated thieves in the step (protection/simulated.py): the thieves' moves are the optimiser's
own, the two gradient variants are what they say, and the step with thieves is pure and resumes bit-exactly."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from isnn_jax.protection.objective import cross_entropy, uniform_kl
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


@pytest.mark.slow  # trains and checkpoints through Orbax: the full suite runs it
def test_the_step_with_thieves_is_pure_and_resumes_bit_exact(tmp_path):
    """Six steps straight equal three steps, an Orbax save and restore, three more steps: the
    thieves add nothing to the state, so the checkpoint holds all a resume needs."""
    from isnn_jax.models import build_model
    from isnn_jax.protection.licence import Licence, TransformSpec
    from isnn_jax.protection.step import Protection, init_state, make_train_step
    from isnn_jax.training import checkpoints

    spec = TransformSpec(kind="mix")
    licence = Licence(bytes(range(32)), "(c) S; B; thieves", spec)
    model = build_model({"name": "mlp", "widths": (16,)}, 10)
    tx = optax.adam(1e-3)
    protection = Protection(spec=spec, simulated=SimulatedThieves(
        thieves=(("sgd", 0.05), ("adam", 1e-3)), inner_steps=2))
    step = jax.jit(make_train_step(model, tx, protection))
    keys = {"licence": licence.key()}
    rng = jax.random.key(7)
    images = jax.random.uniform(jax.random.key(1), (16, 8, 8, 1))
    batch = {"image": images, "label": jnp.arange(16) % 10}
    start = init_state(model, tx, jax.random.key(0), (8, 8, 1), protection)

    def run(state, count):
        for _ in range(count):
            state, metrics = step(state, batch, rng, keys)
        return state, metrics

    straight, metrics = run(start, 6)
    assert {"thief_loss", "thief_accuracy"} <= set(metrics)
    again, _ = run(start, 6)
    jax.tree.map(np.testing.assert_array_equal, straight, again)  # pure: same inputs, same state
    half, _ = run(start, 3)
    mngr = checkpoints.manager(str(tmp_path / "ckpt"))
    checkpoints.save(mngr, half, force=True)
    mngr.wait_until_finished()
    restored = checkpoints.restore_latest_state(mngr, start)
    mngr.close()
    resumed, _ = run(restored, 3)
    jax.tree.map(np.testing.assert_array_equal, straight, resumed)
    plain = Protection(spec=spec)
    without = jax.jit(make_train_step(model, tx, plain))(start, batch, rng, keys)[0]
    assert not np.array_equal(without.params["head"]["kernel"],
                              step(start, batch, rng, keys)[0].params["head"]["kernel"])


def test_bad_thieves_in_the_config_are_refused_before_anything_is_written(tmp_path, data_dir):
    config = short_config(data_dir)
    config.simulated.thieves = ("sgd:fast",)
    with pytest.raises(ConfigError, match="OPTIMISER:RATE"):
        train_and_evaluate(config, tmp_path / "bad", RESUME_LICENCE)
    assert not (tmp_path / "bad").exists()
