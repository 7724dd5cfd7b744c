"""The PyTorch reference (benchmarks/torch_reference.py) computes the JAX step's loss and gradients."""

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # benchmark code; only where the bench extra (torch) is installed

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import torch_reference as ref  # noqa: E402

from isnn_jax.protection import objective, randomness  # noqa: E402
from isnn_jax.protection.licence import Licence, TransformSpec, random_keys  # noqa: E402
from isnn_jax.models import build_model  # noqa: E402
from isnn_jax.protection.step import Protection, example_keys, make_views  # noqa: E402
from isnn_jax.protection.transforms import additive_pattern  # noqa: E402

LOSS_RTOL = 1e-5  # relative difference of the loss
GRAD_RTOL = 1e-4  # per parameter: max |g_jax - g_torch| / max |g_jax|

CNN = {"name": "small_cnn", "features": (16, 32), "hidden": 128, "detector_features": 64,
       "input_offset": True}  # configs/fashion_mnist.py
RESNET = {"name": "resnet18", "stage_sizes": (1, 1, 1, 1), "width": 32, "norm": "group",
          "input_offset": True}  # every block kind of ResNet-18 (stride 2, projection), smaller


def _setup(model_config, image_shape, batch=6):
    spec = TransformSpec()
    protection = Protection(spec=spec, wrong_views=2)
    model = build_model(model_config, 10)
    params = model.init(jax.random.key(0), jnp.zeros((1, *image_shape)))["params"]
    params = dict(params)  # a non-zero offset, so that its gradient path is tested too
    params["input_offset"] = 0.05 * jax.random.normal(jax.random.key(3), image_shape)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.random((batch, *image_shape), dtype=np.float32))
    labels = jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))
    keys = {"licence": Licence(bytes(range(32)), "(c) test").key(), "near": random_keys(1, 5)}
    return model, params, protection, keys, images, labels


def _jax_loss_and_grads(model, params, protection, keys, images, labels, step_rng):
    def loss_fn(p):
        views = make_views(protection, keys, images, step_rng)
        sizes = np.cumsum([v.shape[0] for v in views.values()])[:-1]
        logits = model.apply({"params": p}, jnp.concatenate(list(views.values())))
        return objective.combined_loss(dict(zip(views, jnp.split(logits, sizes))), labels,
                                       protection.weights)[0]
    return jax.value_and_grad(loss_fn)(params)


def _torch_views(protection, keys, images, step_rng):
    """The torch views built from JAX's patterns (the same keys the JAX step draws)."""
    spec, batch, shape = protection.spec, images.shape[0], images.shape[1:]
    stream = jax.random.fold_in(step_rng, randomness.WRONG_KEYS)
    wrong_keys = jnp.concatenate([example_keys(stream, v * batch, batch)
                                  for v in range(protection.wrong_views)])
    wrong = jax.vmap(lambda k: additive_pattern(k, shape, spec))(wrong_keys)
    jax_views = make_views(protection, keys, images, step_rng)
    near = jax.vmap(lambda k: additive_pattern(k, shape, spec))(keys["near"])
    # The near choice: the index whose pattern gives JAX's near view.
    near_view = np.asarray(jax_views["near"])
    candidates = np.clip(np.asarray(images)[:, None] + np.asarray(near)[None], 0, 1)
    choice = np.argmax((candidates == near_view[:, None]).all(axis=(2, 3, 4)), axis=1)
    views = ref.make_views(ref.to_torch_images(np.asarray(images)),
                           torch.from_numpy(np.asarray(additive_pattern(keys["licence"], shape, spec))).permute(2, 0, 1),
                           ref.to_torch_images(np.asarray(near)), spec.epsilon,
                           protection.wrong_views, protection.weights,
                           wrong_patterns=ref.to_torch_images(np.asarray(wrong)),
                           near_choice=torch.from_numpy(choice))
    return views, jax_views


@pytest.mark.parametrize("model_config,image_shape", [
    pytest.param(CNN, (28, 28, 1), id="small_cnn"),
    pytest.param(RESNET, (16, 16, 3), id="resnet18")])
def test_torch_reference_matches_jax_loss_and_gradients(model_config, image_shape):
    model, params, protection, keys, images, labels = _setup(model_config, image_shape)
    step_rng = jax.random.fold_in(jax.random.key(7), 0)
    views, jax_views = _torch_views(protection, keys, images, step_rng)
    for name, view in jax_views.items():  # the inputs are equal, bit for bit
        np.testing.assert_array_equal(views[name].permute(0, 2, 3, 1).numpy(), np.asarray(view))

    loss, grads = _jax_loss_and_grads(model, params, protection, keys, images, labels, step_rng)
    torch_model = ref.load_flax_params(
        ref.build_torch_model(model_config, 10, image_shape).to(memory_format=torch.channels_last),
        jax.tree.map(np.asarray, params))
    torch_loss, _ = ref.isnn_loss(torch_model, views, torch.from_numpy(np.asarray(labels)).long(),
                                  protection.weights)
    torch_loss.backward()
    assert float(torch_loss.detach()) == pytest.approx(float(loss), rel=LOSS_RTOL)

    flat_jax = _flatten(grads)
    mapping = _parameter_mapping(torch_model)
    assert flat_jax.keys() == mapping.keys()
    for name, (parameter, to_flax) in mapping.items():
        torch_grad = to_flax(parameter.grad.numpy())
        scale = np.abs(flat_jax[name]).max() + 1e-12
        error = np.abs(flat_jax[name] - torch_grad).max() / scale
        assert error < GRAD_RTOL, f"{name}: relative gradient error {error:.2e}"


def _parameter_mapping(torch_model):
    """(flax path) -> (torch parameter, torch->flax layout converter), via load_flax_params' rules."""
    conv = lambda w: w.transpose(2, 3, 1, 0)  # noqa: E731
    dense = lambda w: w.T  # noqa: E731
    same = lambda w: w  # noqa: E731
    offset = lambda w: w.transpose(1, 2, 0)  # noqa: E731
    m = {}
    if isinstance(torch_model, ref.TorchSmallCNN):
        m["input_offset"] = (torch_model.offset, offset)
        for i, c in enumerate(torch_model.convs):
            m[f"Conv_{i}/kernel"] = (c.conv.weight, conv)
            m[f"Conv_{i}/bias"] = (c.conv.bias, same)
        dense_layers = [torch_model.detector, torch_model.hidden, torch_model.head]
        for i, layer in enumerate(dense_layers):
            m[f"Dense_{i}/kernel"] = (layer.weight, dense)
            m[f"Dense_{i}/bias"] = (layer.bias, same)
        return m
    m["input_offset"] = (torch_model.offset, offset)
    m["Conv_0/kernel"] = (torch_model.stem.conv.weight, conv)
    m["GroupNorm_0/scale"], m["GroupNorm_0/bias"] = (torch_model.stem_norm.weight, same), (torch_model.stem_norm.bias, same)
    for b, block in enumerate(torch_model.blocks):
        p = f"BasicBlock_{b}"
        parts = [("Conv_0", block.conv1.conv, "GroupNorm_0", block.norm1),
                 ("Conv_1", block.conv2.conv, "GroupNorm_1", block.norm2)]
        if block.shortcut is not None:
            parts.append(("Conv_2", block.shortcut[0].conv, "GroupNorm_2", block.shortcut[1]))
        for cname, c, nname, n in parts:
            m[f"{p}/{cname}/kernel"] = (c.weight, conv)
            m[f"{p}/{nname}/scale"], m[f"{p}/{nname}/bias"] = (n.weight, same), (n.bias, same)
    m["Dense_0/kernel"], m["Dense_0/bias"] = (torch_model.head.weight, dense), (torch_model.head.bias, same)
    return m


def _flatten(tree):
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat["/".join(str(getattr(k, "key", k)) for k in path)] = np.asarray(leaf)
    return flat


def test_torch_report_counts_ranks_as_the_jax_evaluation_does():
    """The PyTorch side of benchmarks/time_to_protect.py states the same figures on equal weights."""
    import torch_evaluation

    from isnn_jax.evaluation.counting import key_rank_rates

    model, params, protection, keys, _, _ = _setup(CNN, (28, 28, 1))
    net = ref.build_torch_model(CNN, 10, (28, 28, 1))
    ref.load_flax_params(net, jax.tree.map(np.asarray, params))
    net.eval()
    rng = np.random.default_rng(1)
    images = rng.random((300, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 10, 300)
    some = random_keys(5, 6)
    patterns = np.asarray(jax.vmap(lambda k: additive_pattern(k, (28, 28, 1),
                                                              protection.spec))(some))
    expected = key_rank_rates(model, params, protection.spec, some, images, labels)
    measured = torch_evaluation.rank_rates(net, patterns, images, labels)
    assert measured.shape == expected.shape == (6, 10)
    np.testing.assert_allclose(measured, expected, atol=1 / 300)  # at most one near-tie apart
    clean = torch_evaluation.rank_rates(net, None, images, labels)
    np.testing.assert_allclose(clean, key_rank_rates(model, params, None, None, images, labels),
                               atol=1 / 300)
