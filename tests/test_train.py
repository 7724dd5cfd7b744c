"""The real trainer on the embedded digits data with a tiny model: short, deterministic runs."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from isnn_jax import api
from isnn_jax.training.config import ConfigError
from isnn_jax.protection.licence import Licence, LicenceError, TransformSpec
from isnn_jax.models import build_model
from isnn_jax.training.loop import train_and_evaluate
from tiny_config import EPSILON, RESUME_LICENCE, short_config, tiny_config


SPEC = TransformSpec(epsilon=EPSILON)




@pytest.fixture(scope="module")
def trained(protected_run):
    """The session's tiny protected run (conftest.py), shared by the tests that read its results."""
    return protected_run


def test_short_protected_run_learns_and_rejects(trained):
    workdir, licence, report = trained
    assert report["step"] == 10 * (1437 // 64)
    # 220 steps of a small model (measured with this licence: legal 0.90, clean 0.36, wrong-key
    # mean about 0.2; chance is 0.10); the full default run separates much further (results.md).
    assert report["legal_accuracy"] > 0.85, report
    assert report["clean_accuracy"] < 0.45, report
    assert report["wrong_key"]["count"] == 20
    assert report["wrong_key"]["mean"] < 0.35, report
    assert report["clean_rank_attack"]["accuracy"] < 0.45, report
    assert set(report["near_key"]) >= {"secret_bit_flip", "substitution", "lookalike"}


def test_workdir_has_metadata_checkpoints_metrics_and_no_secret(trained):
    workdir, licence, _ = trained
    meta = json.loads((workdir / "isnn_metadata.json").read_text())
    assert meta["image_shape"] == [8, 8, 1] and meta["num_classes"] == 10
    assert meta["transform"]["epsilon"] == EPSILON
    assert meta["licence_fingerprint"] == licence.fingerprint()
    assert (workdir / "checkpoints").is_dir()
    assert any((workdir / "tensorboard").iterdir())
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["step"] == 10
    needles = [licence.secret, licence.secret.hex().encode(), licence.key_bytes()[:8]]
    for path in workdir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(needle in content for needle in needles), path


def test_api_restores_the_model_and_only_the_licence_unlocks_it(trained):
    workdir, licence, report = trained
    model = api.load_protected(workdir)
    images, labels = model.test_data()
    legal = (model.predict(images, licence) == labels).mean()
    assert legal == pytest.approx(report["legal_accuracy"], abs=1e-6)
    assert (model.predict(images) == labels).mean() == pytest.approx(report["clean_accuracy"], abs=1e-6)
    np.testing.assert_allclose(np.asarray(model.logits(api.apply_licence(licence, images))),
                               np.asarray(model.logits(images, licence=licence)), rtol=1e-6)
    other = Licence.issue(licence.copyright)
    with pytest.raises(LicenceError, match="different model"):
        model.logits(images, licence=other)


def test_api_rejects_wrong_image_shape_dtype_and_range(trained):
    model = api.load_protected(trained[0])
    with pytest.raises(ValueError, match="model expects"):
        model.logits(np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match="divide uint8"):
        model.logits(np.zeros((2, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        model.logits(np.full((2, 8, 8, 1), 255.0, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        model.logits(np.full((2, 8, 8, 1), np.nan, np.float32))


def final_loss(workdir, step):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if row["step"] == step and "loss" in row][0]["loss"]


@pytest.mark.slow
def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path, data_dir, uninterrupted):
    full_dir, full = uninterrupted
    stopped = train_and_evaluate(short_config(data_dir, stop_after_steps=15), tmp_path / "r",
                                 RESUME_LICENCE)
    assert stopped == {"step": 15, "stopped_early": True}
    resumed = train_and_evaluate(short_config(data_dir), tmp_path / "r", RESUME_LICENCE)
    a = api.load_protected(full_dir).params
    b = api.load_protected(tmp_path / "r").params
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert resumed["legal_accuracy"] == full["legal_accuracy"]
    assert final_loss(tmp_path / "r", full["step"]) == final_loss(full_dir, full["step"])


@pytest.mark.slow
def test_pmap_trainer_matches_sharded_trainer(tmp_path, data_dir, uninterrupted):
    full_dir, full = uninterrupted
    config = short_config(data_dir)
    config.parallelism = "pmap"
    report = train_and_evaluate(config, tmp_path / "p", RESUME_LICENCE)
    a = api.load_protected(full_dir).params
    b = api.load_protected(tmp_path / "p").params
    # Same pure step; only the order of the 2-device gradient sum differs (see test_parallel).
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5), a, b)
    assert report["legal_accuracy"] == pytest.approx(full["legal_accuracy"], abs=0.01)


@pytest.mark.slow
def test_unprotected_baseline_trains_with_the_same_config(tmp_path, data_dir):
    config = tiny_config(data_dir, epochs=2)
    config.protect = False
    config.train.checkpoint_dir = str(tmp_path / "elsewhere")  # e.g. a bucket on a pod
    report = train_and_evaluate(config, tmp_path / "base")
    assert report["clean_accuracy"] > 0.8, report
    assert not (tmp_path / "base" / "checkpoints").exists()
    assert (tmp_path / "elsewhere" / str(report["step"])).is_dir()
    model = api.load_protected(tmp_path / "base")
    assert model.meta["licence_fingerprint"] is None and model.step == report["step"]


def test_unknown_config_field_is_named_with_a_suggestion(tmp_path, data_dir):
    config = tiny_config(data_dir)
    config.unlock()
    config.train.epochz = 3
    with pytest.raises(ConfigError, match=r"config.train.epochz; did you mean config.train.epochs"):
        train_and_evaluate(config, tmp_path / "w", Licence.issue("(c) x", SPEC))


def test_licence_for_another_model_is_refused_on_resume(trained, data_dir):
    workdir, _, _ = trained
    with pytest.raises(LicenceError, match="trained for licence"):
        train_and_evaluate(tiny_config(data_dir), workdir, Licence.issue("(c) other", SPEC))


def test_missing_dataset_names_the_debian_package(tmp_path):
    from isnn_jax.data import DatasetNotFoundError

    config = tiny_config(str(tmp_path / "tfds"))
    config.data.name = "fashion_mnist_idx"
    config.data.source_dir = str(tmp_path / "no-such-dir")
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist"):
        train_and_evaluate(config, tmp_path / "w", Licence.issue("(c) x", SPEC))


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "isnn_jax.train", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.mark.slow
def test_cli_unknown_override_and_missing_licence_errors(tmp_path):
    result = run_cli("--workdir", str(tmp_path / "w"), "--licence", "x.json",
                     "--config.train.epochz=1")
    assert result.returncode == 2
    assert "unknown config field config.train.epochz; did you mean config.train.epochs?" in result.stderr
    result = run_cli("--workdir", str(tmp_path / "w"), "--licence", str(tmp_path / "none.json"))
    assert result.returncode == 2
    assert "licence file" in result.stderr and "not found" in result.stderr


def test_batch_not_divisible_by_devices_fails_before_writing(tmp_path, data_dir):
    config = tiny_config(data_dir, batch_size=63)  # 2 fake devices (conftest)
    with pytest.raises(ValueError, match="batch_size=63 does not divide by the 2 devices"):
        train_and_evaluate(config, tmp_path / "w", RESUME_LICENCE)
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_parameters_and_outputs():
    """config.model.dtype=bfloat16 computes in bf16; parameters and logits stay float32, and the
    outputs are close to the float32 model's on the same parameters."""
    fields = {"name": "small_cnn", "features": (8, 16), "hidden": 32, "detector_features": 16,
              "input_offset": True}
    fp32 = build_model({**fields, "dtype": "float32"}, 10)
    bf16 = build_model({**fields, "dtype": "bfloat16"}, 10)
    images = jax.random.uniform(jax.random.key(1), (4, 8, 8, 1))
    params = fp32.init(jax.random.key(0), images)
    assert {leaf.dtype for leaf in jax.tree.leaves(bf16.init(jax.random.key(0), images))} == {
        jnp.dtype(jnp.float32)}
    full, reduced = fp32.apply(params, images), bf16.apply(params, images)
    assert reduced.dtype == jnp.float32
    assert float(jnp.abs(full - reduced).max()) < 0.05 * float(jnp.abs(full).max()) + 1e-2
    with pytest.raises(ValueError, match=r"unknown model dtype 'float16'; choose one of "
                                         r"float32, bfloat16 \(config.model.dtype\)"):
        build_model({**fields, "dtype": "float16"}, 10)


def test_loading_from_python_logs_no_orbax_notices(trained):
    """api.load_protected outside any command: Orbax's read-only notices stay off the logs."""
    import logging

    absl_logger, seen = logging.getLogger("absl"), []
    collect = logging.Handler(logging.WARNING)
    collect.emit = seen.append
    old_level = absl_logger.level
    absl_logger.addHandler(collect)
    absl_logger.setLevel(logging.WARNING)
    try:
        model = api.load_protected(trained[0])
    finally:
        absl_logger.removeHandler(collect)
        absl_logger.setLevel(old_level)
    assert model.step > 0
    assert [record.getMessage() for record in seen] == []
