"""Hardening views (isnn_jax/hardening.py): the estimate, the thief's perturbations, config errors,
and a bit-exact resume of a hardened run (the perturbations live in the checkpointed state)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from isnn_jax.training.config import ConfigError
from isnn_jax.protection.hardening import Hardening, estimated_pattern, init_unlock, unlock_bounds, unlock_update
from isnn_jax.protection.licence import Licence, TransformSpec
from isnn_jax.models import build_model
from isnn_jax.protection.step import Protection, init_state, make_views
from isnn_jax.training.loop import train_and_evaluate
from isnn_jax.protection.transforms import additive_pattern, apply_transform
from tiny_config import RESUME_LICENCE, short_config

SPEC = TransformSpec(epsilon=0.05)
SHAPE = (8, 8, 1)


def _example_keys(count: int) -> jax.Array:
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(jnp.arange(count))


def test_estimate_from_identical_images_is_the_true_pattern():
    """With every image equal, mean(legal) - mean(clean) is exactly the pattern: the estimate
    must reproduce it (the eavesdropper's best case)."""
    licence = Licence(bytes(range(32)), "(c) S; B; estimate", SPEC)
    images = jnp.full((64, *SHAPE), 0.5, jnp.float32)
    legal = apply_transform(SPEC, licence.key(), images)
    hardening = Hardening(estimate_observed=(16, 16))
    estimate = estimated_pattern(hardening, SPEC.epsilon, legal, images, jax.random.key(0),
                                 _example_keys(64), 64, None)
    np.testing.assert_array_equal(estimate, additive_pattern(licence.key(), SHAPE, SPEC))


def test_estimate_from_few_varied_images_is_noisy():
    """With real variation between images, 8 observations agree with the pattern's signs far
    less often than 32 do (the views the model learns to reject are imperfect estimates)."""
    licence = Licence(bytes(range(32)), "(c) S; B; estimate", SPEC)
    images = jax.random.uniform(jax.random.key(1), (128, *SHAPE))
    legal = apply_transform(SPEC, licence.key(), images)
    true = np.sign(np.asarray(additive_pattern(licence.key(), SHAPE, SPEC)))

    def agreement(count: int) -> float:
        rates = []
        for seed in range(20):
            estimate = estimated_pattern(Hardening(estimate_observed=(count, count)), SPEC.epsilon,
                                         legal, images, jax.random.key(seed), _example_keys(128),
                                         128, None)
            rates.append(float((np.sign(np.asarray(estimate)) == true).mean()))
        return float(np.mean(rates))

    few, many = agreement(4), agreement(64)
    assert 0.5 < few < many, (few, many)


@pytest.mark.slow
def test_unlock_step_moves_towards_the_thief_goal_within_bounds():
    model = build_model({"name": "small_cnn", "features": (8,), "hidden": 16}, 10)
    params = model.init(jax.random.key(0), jnp.zeros((1, *SHAPE)))["params"]
    images = jax.random.uniform(jax.random.key(1), (64, *SHAPE))
    labels = jax.random.randint(jax.random.key(2), (64,), 0, 10)
    hardening = Hardening(unlock=2, unlock_step=0.2)
    perturbations = init_unlock(hardening, SPEC.epsilon, SHAPE, jax.random.key(4))
    bounds = np.asarray(unlock_bounds(2, SPEC.epsilon))
    np.testing.assert_allclose(bounds, [SPEC.epsilon, 1.0])

    def thief_loss(u: jax.Array) -> float:
        logits = model.apply({"params": params}, jnp.clip(images[None] + u[:, None], 0, 1)
                             .reshape(-1, *SHAPE))
        return float(optax.softmax_cross_entropy_with_integer_labels(
            logits, jnp.tile(labels, 2)).mean())

    before = thief_loss(perturbations)
    apply = lambda p, x: model.apply({"params": p}, x)  # noqa: E731
    for _ in range(10):
        perturbations = unlock_update(apply, params, perturbations, images, labels, hardening,
                                      SPEC.epsilon, None)
    assert thief_loss(perturbations) < before - 1e-3
    for index, bound in enumerate(bounds):
        assert float(jnp.abs(perturbations[index]).max()) <= bound + 1e-7
    assert float(jnp.abs(perturbations[1]).max()) > SPEC.epsilon  # the unbounded one went past


def test_hardened_views_and_state():
    protection = Protection(spec=SPEC, weights={"clean": 1.0, "unlock": 1.0, "estimate": 1.0},
                            hardening=Hardening(unlock=3, estimate_observed=(2, 4)))
    model = build_model({"name": "small_cnn", "features": (8,), "hidden": 16}, 10)
    state = init_state(model, optax.adam(1e-3), jax.random.key(0), SHAPE, protection)
    assert state.opt_state["unlock"].shape == (3, *SHAPE)
    licence = Licence(bytes(range(32)), "(c) S; B; views", SPEC)
    images = jax.random.uniform(jax.random.key(1), (16, *SHAPE))
    views = make_views(protection, {"licence": licence.key()}, images, jax.random.key(2),
                       unlock=state.opt_state["unlock"])
    assert {name: view.shape[0] for name, view in views.items()} == {
        "legal": 16, "clean": 16, "wrong": 16, "estimate": 16, "unlock": 48}
    # Without hardening the optimiser state is the optimiser's alone (checkpoints unchanged).
    plain = init_state(model, optax.adam(1e-3), jax.random.key(0), SHAPE, Protection(spec=SPEC))
    assert not isinstance(plain.opt_state, dict)


@pytest.mark.parametrize("fields, message", [
    ({"unlock_perturbations": -1}, r"config.hardening.unlock_perturbations must be >= 0, got -1"),
    ({"unlock_step": 0.0}, r"config.hardening.unlock_step must be in \(0, 1\], got 0.0"),
    ({"estimate_min": 9, "estimate_max": 4}, r"estimate_min/estimate_max must be 0/0 \(off\) or "
                                             r"1 <= min <= max, got 9/4"),
    ({"estimate_min": 8, "estimate_max": 40}, r"config.hardening.estimate_max=40 needs a global "
                                              r"batch of at least 80, got 64.*train.batch_size"),
])
def test_bad_hardening_is_refused_before_anything_is_written(tmp_path, data_dir, fields, message):
    config = short_config(data_dir)
    for name, value in fields.items():
        config.hardening[name] = value
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(config, workdir, RESUME_LICENCE)
    assert not workdir.exists()


@pytest.mark.slow
def test_hardened_run_resumes_bit_exact(tmp_path, data_dir):
    """Stop at step 15 and resume: parameters and the thief's perturbations equal the
    uninterrupted run's, so the perturbations are saved and restored with the state."""
    from isnn_jax.training import checkpoints
    from isnn_jax.models import build_model as build
    from isnn_jax.training.setup import make_optimizer

    def config(**train):
        cfg = short_config(data_dir, epochs=1, checkpoint_every_steps=100, **train)
        cfg.hardening.unlock_perturbations = 2
        cfg.hardening.estimate_min, cfg.hardening.estimate_max = 4, 16
        return cfg

    train_and_evaluate(config(), tmp_path / "straight", RESUME_LICENCE)
    train_and_evaluate(config(stop_after_steps=15), tmp_path / "resumed", RESUME_LICENCE)
    train_and_evaluate(config(), tmp_path / "resumed", RESUME_LICENCE)

    cfg = config()
    model = build(cfg.model.to_dict(), 10)
    steps = 22  # one epoch of the 1,437 digits at batch 64
    protection_state = init_state(model, make_optimizer(cfg, steps), jax.random.key(0), SHAPE,
                                  Protection(spec=TransformSpec(epsilon=cfg.licence.epsilon),
                                             hardening=Hardening(unlock=2)))
    states = []
    for run in ("straight", "resumed"):
        mngr = checkpoints.manager(str(tmp_path / run / "checkpoints"), read_only=True)
        states.append(checkpoints.restore_latest_state(mngr, protection_state))
        mngr.close()
    assert int(states[0].step) == int(states[1].step) == steps
    assert not np.allclose(states[0].opt_state["unlock"], protection_state.opt_state["unlock"])
    jax.tree.map(np.testing.assert_array_equal, states[0].params, states[1].params)
    np.testing.assert_array_equal(states[0].opt_state["unlock"], states[1].opt_state["unlock"])
