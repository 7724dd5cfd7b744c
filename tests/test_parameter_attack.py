"""Reading the key out of the weights: known cases of the zero-data attack, and the default."""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from isnn_jax.attacks import parameters
from isnn_jax.attacks.budgets import quick_budgets
from isnn_jax.attacks.setting import Deadline, load_setting
from isnn_jax.runtime.model import ProtectedModel
from isnn_jax.configs.default import get_config as embedded_default
from isnn_jax.protection.licence import Licence
from isnn_jax.training.loop import train_and_evaluate
from isnn_jax.training.setup import transform_spec


class Planted(nn.Module):
    """The protected network plus an unused input-shaped parameter the test plants a value in."""

    inner: nn.Module
    image_shape: tuple

    @nn.compact
    def __call__(self, images):
        self.param("input_offset", nn.initializers.zeros, self.image_shape, jnp.float32)
        return self.inner(images)


def budget():
    config = quick_budgets().parameter_reading
    config.report_top = 1000  # every candidate's row
    return config


def test_a_parameter_holding_minus_the_pattern_is_found_and_unlocks(attack_setting):
    """The planted offset -delta is read, negated and applied: the legal accuracy, no data."""
    setting = attack_setting
    target = setting.protected
    pattern = np.asarray(setting.true_pattern())
    planted = ProtectedModel.of(Planted(target.module, tuple(target.image_shape)),
                     params={"inner": target.params, "input_offset": jnp.asarray(-pattern)},
                     num_classes=target.num_classes, image_shape=target.image_shape)
    result = parameters.run(dataclasses.replace(setting, protected=planted), budget(), 0,
                            Deadline(600))
    legal = parameters.pattern_accuracies(target, target.params, pattern[None],
                                          setting.test_images, setting.test_labels)[0]
    planted_rows = {row["applied"]: row["accuracy"] for row in result["top"]
                    if row["parameter"] == "input_offset"}
    assert planted_rows["negated"] == pytest.approx(legal)  # -(-delta) is the pattern itself
    assert result["max_accuracy"] >= legal - 1e-9
    assert result["max_abs_cosine_with_true_pattern"] == pytest.approx(1.0)


def test_the_additive_detector_kernel_holds_the_key(attack_setting):
    """A measured leak, kept visible: with the additive transform the dense detector over the
    input lines up with the pattern, and its columns' signs unlock the tiny model with no data."""
    setting = attack_setting
    target = setting.protected
    legal = parameters.pattern_accuracies(target, target.params,
                                          np.asarray(setting.true_pattern())[None],
                                          setting.test_images, setting.test_labels)[0]
    result = parameters.run(setting, budget(), 0, Deadline(600))
    assert "input_offset" not in result["parameters_read"]  # the offset is off by default
    assert result["best"]["parameter"].startswith("Dense_0/kernel")
    assert result["max_accuracy"] > legal - 0.1, (result["max_accuracy"], legal)


def test_candidates_cover_input_sized_leaves_and_dense_kernels_over_the_input():
    shape = (8, 8, 1)
    params = {"offset": np.ones(shape), "flat": np.arange(64.0) - 30, "Dense_0": {
        "kernel": np.random.default_rng(0).normal(size=(64, 5)), "bias": np.zeros(5)},
        "conv": np.zeros((3, 3, 1, 4))}
    names = [name for name, _ in parameters.input_shaped_candidates(params, shape, columns=2,
                                                                    components=1)]
    assert sum(name.startswith("Dense_0/kernel[:, ") for name in names) == 2
    assert len(names) == 6  # 2 columns, the mean column, 1 singular vector, offset, flat
    assert {"offset", "flat", "Dense_0/kernel mean column",
            "Dense_0/kernel singular vector 0"} <= set(names)
    assert not any(name.startswith("conv") or "bias" in name for name in names)
    patterns = parameters.as_patterns(np.array([0.5, -0.2, 0.0]), 0.03)
    np.testing.assert_allclose(patterns["negated_sign"], [-0.03, 0.03, 0.0])


def test_layout_reading_recovers_a_shuffle_from_spatially_smooth_kernel_rows():
    """Rows of a kernel that vary smoothly with the pixel position betray the permutation."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"), -1).reshape(-1, 2)
    centres = rng.uniform(0, 7, (64, 2))
    kernel = np.exp(-((grid[:, None] - centres[None]) ** 2).sum(-1) / (2 * 1.5 ** 2))
    perm = rng.permutation(64)  # shuffled value j came from pixel perm[j]
    guesses = parameters.layout_permutations(kernel[perm], 8, 8)
    assert (guesses == perm).mean(axis=1).max() > 0.8
    unrelated = parameters.layout_permutations(rng.normal(size=(64, 64)), 8, 8)
    assert (unrelated == perm).mean(axis=1).max() < 0.2
    # four blocks sharing one permutation, each row noisy on its own: the average still reads it
    noisy = np.concatenate([kernel[perm] + rng.normal(scale=0.3, size=kernel.shape)
                            for _ in range(4)])
    # (measured 0.59-0.61 of the positions, by LAPACK build; one random layout gets < 0.2)
    assert (parameters.layout_permutations(noisy, 8, 8, blocks=4) == perm).mean(axis=1).max() > 0.5


@pytest.mark.slow
def test_the_embedded_default_keeps_its_key_out_of_the_weights(tmp_path, data_dir):
    """The default digits config (shortened): protected, and reading the weights gives chance.

    Its MLP's first kernel reads the mixed input densely, so the attack reads it (columns,
    singular vectors); the mixing leaves no pattern or layout there to find."""
    config = embedded_default()
    config.data.data_dir = data_dir
    config.train.epochs = 12
    config.eval.random_licences = 0
    config.eval.near_per_class = 1
    licence = Licence(bytes(range(64, 96)), "(c) Seller; Buyer; default read",
                      transform_spec(config))
    report = train_and_evaluate(config, tmp_path / "w", licence)
    assert report["legal_accuracy"] > 0.9 and report["clean_accuracy"] < 0.2, report
    setting = load_setting(tmp_path / "w", licence)
    result = parameters.run(setting, budget(), 0, Deadline(600))
    assert any(name.startswith("Dense_0/kernel") for name in result["parameters_read"]), result
    assert "skipped" in result["layout"], result
    assert result["max_accuracy"] < 0.2, result  # chance is 10%
