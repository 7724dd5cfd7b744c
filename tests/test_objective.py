import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from isnn_jax.protection import objective
from isnn_jax.protection.licence import TransformSpec
from isnn_jax.models import build_model
from isnn_jax.protection.step import Protection, init_state, make_train_step


def test_uniform_kl_is_zero_exactly_at_uniform():
    labels = jnp.array([0, 1])
    assert float(objective.uniform_kl(jnp.zeros((2, 10)), labels)) == pytest.approx(0.0, abs=1e-6)
    assert float(objective.uniform_kl(jnp.array([[5.0] + [0.0] * 9] * 2), labels)) > 1.0


def test_suppress_is_small_when_true_class_has_no_mass():
    logits = jnp.array([[-20.0, 5.0, 0.0]])
    assert float(objective.suppress_true(logits, jnp.array([0]))) < 1e-6
    assert float(objective.suppress_true(logits, jnp.array([1]))) > 4.0


def test_combined_loss_weights_and_metrics():
    labels = jnp.array([0, 1])
    right = jnp.array([[9.0, 0.0], [0.0, 9.0]])
    views = {"legal": right, "clean": right, "wrong": jnp.concatenate([right, right])}
    loss, metrics = objective.combined_loss(views, labels, {"clean": 2.0, "wrong": 0.0})
    expected = metrics["legal_loss"] + 2.0 * metrics["clean_loss"]
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert float(metrics["wrong_accuracy"]) == 1.0 and float(metrics["legal_accuracy"]) == 1.0
    with pytest.raises(ValueError, match="unknown illegal_form"):
        objective.combined_loss(views, labels, {}, "nope")


# The default form with both transforms in the everyday subset; every other form in the full run.
CASES = [pytest.param(form, "additive", marks=() if form == "uniform_constant" else pytest.mark.slow)
         for form in objective.ILLEGAL_FORMS] + [
    pytest.param("uniform_constant", "shuffle_additive", marks=pytest.mark.slow)]


@pytest.mark.parametrize("form,kind", CASES)
def test_train_step_gradients_are_finite(licence, form, kind):
    model = build_model({"name": "small_cnn", "features": (4, 8), "hidden": 16,
                         "detector_features": 8}, 10)
    tx = optax.adam(1e-3)
    state = init_state(model, tx, jax.random.key(0), (8, 8, 1))
    protection = Protection(spec=TransformSpec(kind=kind), wrong_views=2, illegal_form=form)
    step = jax.jit(make_train_step(model, tx, protection))
    batch = {"image": jax.random.uniform(jax.random.key(1), (16, 8, 8, 1)),
             "label": jnp.arange(16) % 10}
    keys = {"licence": licence.key(), "near": jax.random.split(jax.random.key(2), 4)}
    new_state, metrics = step(state, batch, jax.random.key(3), keys)
    assert int(new_state.step) == 1
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["grad_norm"]) > 0
    assert {"legal_loss", "clean_loss", "wrong_loss", "near_loss"} <= set(metrics)


def test_thinned_illegal_views_are_the_full_views_of_every_nth_example(licence):
    """illegal_every=4 makes the clean, wrong-key and near views of examples 0, 4, 8, ... with
    the keys the full step gives those examples, and scores them against their own labels."""
    from isnn_jax.protection.step import make_views

    images = jax.random.uniform(jax.random.key(1), (16, 8, 8, 1))
    keys = {"licence": licence.key(), "near": jax.random.split(jax.random.key(2), 4)}
    views = jax.jit(make_views, static_argnums=0)  # eager, the per-example vmaps take seconds
    full, thin = (views(Protection(spec=TransformSpec(), wrong_views=2, illegal_every=n),
                        keys, images, jax.random.key(3)) for n in (1, 4))
    np.testing.assert_array_equal(thin["legal"], full["legal"])
    np.testing.assert_array_equal(thin["clean"], full["clean"][::4])
    np.testing.assert_array_equal(thin["near"], full["near"][::4])
    for view in range(2):
        np.testing.assert_array_equal(thin["wrong"][4 * view:4 * view + 4],
                                      full["wrong"][16 * view:16 * view + 16][::4])
    labels = jnp.arange(16) % 10
    logits = {"legal": jax.nn.one_hot(labels, 10) * 5, "clean": jax.nn.one_hot(labels[::4], 10),
              "wrong": jnp.zeros((8, 10))}
    _, metrics = objective.combined_loss(logits, labels, {"clean": 1.0, "wrong": 1.0},
                                         illegal_every=4)
    assert float(metrics["clean_accuracy"]) == 1.0  # each thinned view met its own labels
    assert float(metrics["legal_accuracy"]) == 1.0


def test_grouped_wrong_keys_are_shared_by_consecutive_examples(licence):
    """wrong_key_group=4: examples 0-3 get one wrong key, 4-7 the next; group 1 is the default."""
    from isnn_jax.protection.step import make_views

    images = jnp.broadcast_to(jax.random.uniform(jax.random.key(1), (1, 8, 8, 1)), (8, 8, 8, 1))
    keys = {"licence": licence.key()}
    make = jax.jit(make_views, static_argnums=0)
    views = {group: make(Protection(spec=TransformSpec(), wrong_views=1, wrong_key_group=group),
                         keys, images, jax.random.key(3))["wrong"] for group in (1, 4)}
    grouped = np.asarray(views[4]).reshape(2, 4, -1)  # one image, so a shared key gives one view
    assert all(np.array_equal(row, grouped[g, 0]) for g in range(2) for row in grouped[g])
    assert not np.array_equal(grouped[0, 0], grouped[1, 0])
    np.testing.assert_array_equal(views[4][0], views[1][0])  # group 0's key is example 0's
    assert len({np.asarray(v).tobytes() for v in views[1]}) == 8


def test_variance_and_margin_terms_vanish_exactly_where_they_should():
    labels = jnp.array([0, 1, 2, 3])
    same = jnp.tile(jnp.array([[3.0, 1.0, 0.0, -2.0]]), (4, 1))
    assert float(objective.output_variance(same, labels)) == pytest.approx(0.0, abs=1e-7)
    # Adding a constant per row changes nothing (only the centred logits count).
    shifted = same + jnp.arange(4.0)[:, None]
    assert float(objective.output_variance(shifted, labels)) == pytest.approx(0.0, abs=1e-6)
    varied = same.at[0, 0].set(7.0)
    assert float(objective.output_variance(varied, labels)) > 0.5
    # Truth 1.0 below the best other logit: the 0.5 margin is met; truth on top: penalised.
    below = jnp.array([[0.0, 1.0, 0.0, 0.0]])
    assert float(objective.true_class_margin(below, jnp.array([0]))) == 0.0
    assert float(objective.true_class_margin(below, jnp.array([1]))) == pytest.approx(1.5)


def test_true_label_rank_counts_outputs_above_the_truth():
    from isnn_jax.evaluation.counting import true_label_rank

    logits = jnp.array([[0.1, 0.5, 0.3], [0.9, 0.2, 0.4]])
    np.testing.assert_array_equal(np.asarray(true_label_rank(logits, jnp.array([1, 1]))), [0, 2])


def test_a_constant_output_is_right_for_one_class_only():
    """Ties rank as argmax breaks them: a model that outputs the same logits for every input
    (dead units, a zero head) scores the share of the first class, not 100%."""
    from isnn_jax.evaluation.counting import plain_accuracy, true_label_rank

    flat = jnp.zeros((4, 3))
    np.testing.assert_array_equal(np.asarray(true_label_rank(flat, jnp.array([0, 1, 2, 2]))),
                                  [0, 1, 2, 2])
    tied = jnp.array([[0.2, 0.7, 0.7]])  # argmax is class 1
    np.testing.assert_array_equal(np.asarray(true_label_rank(tied, jnp.array([1]))), [0])
    np.testing.assert_array_equal(np.asarray(true_label_rank(tied, jnp.array([2]))), [1])

    class Zero(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, kernel_init=nn.initializers.zeros)(x.reshape(x.shape[0], -1))

    images = np.random.default_rng(0).uniform(size=(40, 2, 2, 1)).astype(np.float32)
    labels = np.arange(40) % 4 % 3
    params = Zero().init(jax.random.key(0), images)["params"]
    assert plain_accuracy(Zero(), params, images, labels) == float((labels == 0).mean())


@pytest.mark.parametrize("kind", ["mix", "additive"])
def test_partial_key_views_carry_a_bounded_fraction_of_the_legal_input(licence, kind):
    """Each partial view is `a * legal + b * other` with the other part the image under a fresh
    random key and `a` in [0, partial_max]: found back by least squares per image."""
    from isnn_jax.protection import randomness
    from isnn_jax.protection.step import example_keys, make_views
    from isnn_jax.protection.transforms import apply_per_example, blend

    spec = TransformSpec(kind=kind)
    images = jax.random.uniform(jax.random.key(1), (8, 8, 8, 1))
    protection = Protection(spec=spec, wrong_views=1, partial_max=0.4,
                            weights={"wrong": 1.0, "partial": 1.0})
    views = jax.jit(make_views, static_argnums=0)(protection, {"licence": licence.key()}, images,
                                                  jax.random.key(3))
    assert views["partial"].shape == images.shape
    stream = jax.random.fold_in(jax.random.key(3), randomness.PARTIAL_KEYS)
    others = jax.jit(apply_per_example, static_argnums=0)(spec, example_keys(stream, 0, 8),
                                                          images)
    flat = lambda v: np.asarray(v).reshape(8, -1)
    legal, other, partial = flat(views["legal"]), flat(others), flat(views["partial"])
    amounts = []
    for i in range(8):
        (a, b), *_ = np.linalg.lstsq(np.stack([legal[i], other[i]], 1), partial[i], rcond=None)
        np.testing.assert_allclose(np.stack([legal[i], other[i]], 1) @ [a, b], partial[i],
                                   atol=1e-5)
        assert 0.0 <= a <= 0.4 + 1e-5
        assert b == pytest.approx(np.sqrt(1 - a * a) if kind == "mix" else 1 - a, abs=1e-4)
        amounts.append(a)
    assert len(set(np.round(amounts, 4))) == 8  # a fresh fraction per image
    np.testing.assert_array_equal(blend(spec, views["legal"], others, jnp.ones(8)),
                                  views["legal"])  # the whole fraction is the legal input
    # the other key is not one of the wrong-key view's keys
    assert not np.allclose(flat(views["wrong"]), other)


@pytest.mark.parametrize("value", [0.0, 1.0, -0.2])
def test_a_partial_fraction_outside_0_1_names_the_field(value):
    from isnn_jax.training.config import ConfigError, get_config
    from isnn_jax.training.setup import protection_of, transform_spec

    config = get_config()
    config.objective.partial_max = value
    with pytest.raises(ConfigError, match=rf"objective.partial_max={value} must lie strictly "
                                          r"between 0 and 1"):
        protection_of(config, transform_spec(config))
