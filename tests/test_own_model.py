"""Your own model: import paths, constructor arguments, BatchNorm statistics and dropout in the
step, checkpoints and a fresh process (docs/own_model.md)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import flax.linen as nn

from isnn_jax.models import ModelImportError, StatefulModel, build_model
from isnn_jax.protection.licence import Licence, TransformSpec
from isnn_jax.protection.step import Protection, init_state, make_train_step
from isnn_jax.training.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = f"{ROOT}/docs/examples/bn_classifier.py:BNClassifier"
MLP_EXAMPLE = f"{ROOT}/docs/examples/bn_classifier.py:BNMLP"
SHAPE = (8, 8, 1)


@pytest.fixture
def user_path(monkeypatch):
    """The tests folder importable, as a user's own package folder would be."""
    monkeypatch.syspath_prepend(str(ROOT / "tests"))


def _model(name, **kwargs):
    return build_model({"name": name, "kwargs": kwargs, "train_flag": "auto"}, 10)


def test_every_import_form_builds_with_its_arguments(user_path):
    by_file = _model(EXAMPLE, features=(4,))
    assert isinstance(by_file, StatefulModel) and by_file.module.features == (4,)
    assert by_file.module.num_classes == 10 and by_file.train_flag == "train"
    by_module = _model("user_models:TinyBN", width=3)
    assert by_module.module.width == 3
    by_function = _model("user_models:tiny_mlp")
    assert by_function.train_flag == "none"
    logits = by_function.apply(by_function.init(jax.random.key(0), jnp.zeros((2, *SHAPE))),
                               jnp.zeros((2, *SHAPE)))
    assert logits.shape == (2, 10)
    by_nnx = _model("user_models:NnxBN")
    variables = by_nnx.init(jax.random.key(0), jnp.zeros((2, *SHAPE)))["params"]
    assert set(variables) == {"params", "batch_stats"}


@pytest.mark.parametrize("name, kwargs, words", [
    ("no_such_module_here:Net", {}, ["cannot import 'no_such_module_here'", "PYTHONPATH"]),
    ("/nowhere/model.py:Net", {}, ["model file /nowhere/model.py", "does not exist"]),
    ("user_models:Missing", {}, ["has no attribute 'Missing'", "TinyBN"]),
    ("user_models:NOT_A_MODEL", {}, ["is a int, not a Flax module"]),
    ("user_models:TinyBN", {"depth": 3}, ["TinyBN(**config.model.kwargs) failed", "depth"]),
    ("user_models", {}, ["is not an import path"]),
])
def test_a_model_that_cannot_be_built_is_named(user_path, name, kwargs, words):
    with pytest.raises((ModelImportError, ValueError)) as err:
        _model(name if ":" in name else name + ":", **kwargs)
    for word in words:
        assert word in str(err.value)


def test_a_model_with_the_wrong_output_is_refused_before_anything_is_written(user_path,
                                                                              tmp_path):
    from tests.tiny_config import get_config
    from isnn_jax.training.loop import model_of
    config = get_config()
    config.model.name = "user_models:tiny_mlp"
    with config.unlocked():
        config.model.kwargs.classes = 7
    with pytest.raises(ConfigError, match=r"outputs shape \(1, 7\).*must output \(1, 10\)"):
        model_of(config, SHAPE, 10)


def _step_setup(name):
    model = _model(name)
    tx = optax.adam(1e-2)
    spec = TransformSpec(kind="additive", epsilon=0.1, block_size=4)
    protection = Protection(spec=spec, wrong_views=1)
    licence = Licence(bytes(range(32)), "(c) S; B; own model", spec)
    state = init_state(model, tx, jax.random.key(0), SHAPE, protection)
    step = jax.jit(make_train_step(model, tx, protection))
    images = jax.random.uniform(jax.random.key(1), (16, *SHAPE))
    batch = {"image": images, "label": jnp.arange(16) % 10}
    return model, state, step, batch, {"licence": licence.key()}


@pytest.mark.parametrize("name", ["user_models:TinyBN", "user_models:NnxBN"])
def test_the_step_trains_parameters_and_updates_batch_statistics(user_path, name):
    model, state, step, batch, keys = _step_setup(name)
    params, stats = model.split(state.params)
    # The optimiser sees the trainable parameters only.
    assert (jax.tree.structure(state.opt_state[0].mu) == jax.tree.structure(params))
    new, metrics = step(state, batch, jax.random.key(2), keys)
    new_params, new_stats = model.split(new.params)
    assert np.isfinite(float(metrics["loss"]))
    for before, after in zip(jax.tree.leaves(stats), jax.tree.leaves(new_stats)):
        assert not np.allclose(before, after)  # the statistics moved towards the batch's
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(params),
                                                 jax.tree.leaves(new_params))]
    assert all(moved)
    again, _ = step(state, batch, jax.random.key(2), keys)  # pure: the same inputs, same state
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(again)):
        np.testing.assert_array_equal(a, b)


def test_the_legal_batch_statistics_are_recovered_exactly(user_path):
    """Two training-mode passes give the batch's own BatchNorm statistics, whatever the
    momentum, and the moving averages the module itself would have made."""
    model, state, _, batch, _ = _step_setup("user_models:TinyBN")
    params, stats = model.split(state.params)
    stats = jax.tree.map(lambda leaf: leaf + 0.3, stats)  # averages away from their start
    images = batch["image"]
    statistics, averages = model.batch_statistics(params, stats, images, jax.random.key(0))
    conv = nn.Conv(model.module.width, (3, 3)).apply({"params": params["Conv_0"]}, images)
    np.testing.assert_allclose(statistics["batch_stats"]["BatchNorm_0"]["mean"],
                               conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(statistics["batch_stats"]["BatchNorm_0"]["var"],
                               conv.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    _, updated = model.train_apply(params, stats, images, jax.random.key(0))
    for ours, theirs in zip(jax.tree.leaves(averages), jax.tree.leaves(updated)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_inference_uses_running_statistics_and_no_dropout(user_path):
    model, state, step, batch, keys = _step_setup("user_models:TinyBN")
    state, _ = step(state, batch, jax.random.key(2), keys)
    images = batch["image"]
    together = model.apply({"params": state.params}, images)
    alone = model.apply({"params": state.params}, images[:1])
    np.testing.assert_allclose(together[:1], alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.apply({"params": state.params}, images), together)


ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT / "tests")}


@pytest.mark.slow
def test_an_outside_module_trains_from_the_cli_and_predicts_and_exports_in_fresh_processes(
        tmp_path):
    """The walkthrough of docs/own_model.md, small: Fashion-MNIST PNGs in class folders, the
    BatchNorm-dropout MLP of docs/examples, protected through python -m isnn_jax.train."""
    folder = tmp_path / "png"
    made = subprocess.run([sys.executable, str(ROOT / "benchmarks/make_image_folder.py"),
                           str(folder), "--limit", "400"], capture_output=True, text=True,
                          timeout=120, env={**ENV, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    workdir, licence = tmp_path / "w", tmp_path / "licence.json"
    train = [sys.executable, "-m", "isnn_jax.train", "--config", "fashion_mnist_strong",
             f"--config.model.name={MLP_EXAMPLE}", "--config.model.kwargs.widths=(64,)",
             "--config.data.name=image_folder", f"--config.data.source_dir={folder}",
             "--config.train.epochs=2", "--config.train.batch_size=64",
             "--config.eval.random_licences=4", "--config.eval.near_per_class=1",
             "--workdir", str(workdir), "--issue_licence", str(licence)]
    result = subprocess.run(train, capture_output=True, text=True, timeout=300, env=ENV,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((workdir / "isnn_metadata.json").read_text())
    assert meta["class_names"][:2] == ["Ankle_boot", "Bag"] and meta["image_shape"] == [28, 28, 1]
    assert meta["model"]["name"] == MLP_EXAMPLE and meta["model"]["kwargs"] == {"widths": [64]}
    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", images)
    check = (f"from isnn_jax import api; import numpy as np, json\n"
             f"m = api.load_protected({str(workdir)!r})\n"
             f"l = api.Licence.load({str(licence)!r})\n"
             f"print(json.dumps(m.predict(np.load({str(tmp_path / 'x.npy')!r}), l).tolist()))")
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            timeout=120, env=ENV, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    predicted = json.loads(loaded.stdout.strip().splitlines()[-1])
    result = subprocess.run([sys.executable, "-m", "isnn_jax.predict", "--workdir", str(workdir),
                             "--licence", str(licence), "--json", str(tmp_path / "x.npy")],
                            capture_output=True, text=True, timeout=120, env=ENV, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)["predictions"]
    assert [row["class"] for row in rows] == predicted
    exported = tmp_path / "model.isnn"
    result = subprocess.run([sys.executable, "-m", "isnn_jax.export", "--workdir", str(workdir),
                             "--out", str(exported)], capture_output=True, text=True, timeout=300,
                            env=ENV, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    result = subprocess.run([sys.executable, "-m", "isnn_jax.predict", "--export", str(exported),
                             "--licence", str(licence), "--json", str(tmp_path / "x.npy")],
                            capture_output=True, text=True, timeout=120, env=ENV, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [row["class"] for row in json.loads(result.stdout)["predictions"]] == predicted
