"""What an attack works on: the protected model, the licence, data, an optional baseline, time.

The licence is held only so that controls (the true key, the true pattern) can be measured; the
attacks themselves never read it, and nothing derived from its secret is ever reported except
its public fingerprint.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from isnn_jax.protection.licence import Licence, LicenceError
from isnn_jax.protection.transforms import additive_pattern
from isnn_jax.runtime.model import ProtectedModel, load_protected
from isnn_jax.training.checkpoints import CheckpointError


class AttackSetupError(ValueError):
    """The workdir, licence or data cannot be used for an attack; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """Everything the attacks share; images are float32 NHWC in [0, 1], labels int32."""

    protected: ProtectedModel
    licence: Licence
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    baseline: ProtectedModel | None = None
    seed: int = 0

    @property
    def spec(self):
        """The public transform parameters (kind, epsilon, ...)."""
        return self.licence.transform

    def true_pattern(self) -> jax.Array:
        """The licence's additive pattern (a control; never written to any output)."""
        if "additive" not in self.spec.kind:
            raise AttackSetupError(f"transform kind {self.spec.kind!r} has no additive pattern")
        return additive_pattern(self.licence.key(), self.protected.image_shape, self.spec)


class Deadline:
    """A wall-clock budget: attacks check it between chunks of work and stop early when spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the deadline was set."""
        return time.perf_counter() - self.started

    def expired(self) -> bool:
        """True once the budget is spent."""
        return self.elapsed() >= self.seconds


def eval_subset(setting: Setting, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` test images and labels (0: all); one fixed subset for every attack."""
    if count <= 0 or count >= setting.test_images.shape[0]:
        return setting.test_images, setting.test_labels
    return setting.test_images[:count], setting.test_labels[:count]


def train_subset(setting: Setting, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random `fraction` of the clean labelled training split (at least one image)."""
    total = setting.train_images.shape[0]
    count = max(1, int(round(fraction * total)))
    chosen = np.sort(np.random.default_rng(seed).permutation(total)[:count])
    return setting.train_images[chosen], setting.train_labels[chosen]


def thief_data(setting: Setting, fraction: float, seed: int, validation: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The thief's clean labelled images (a seeded `fraction` of the training split), split into
    the part it trains on and the `validation` share it selects models with (at least one
    image each); every attack with the same (fraction, seed) gets the same images."""
    images, labels = train_subset(setting, fraction, seed)
    held = min(max(1, int(round(validation * images.shape[0]))), images.shape[0] - 1)
    order = np.random.default_rng([seed, 0x7A11]).permutation(images.shape[0])
    val, train = np.sort(order[:held]), np.sort(order[held:])
    return images[train], labels[train], images[val], labels[val]


def on_host(params: Any) -> Any:
    """Weights as plain uncommitted arrays, so restored, fresh and trained weights all share one
    compiled evaluation or training step (a restored tree may carry another sharding)."""
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(np.asarray(leaf)), params)


@functools.lru_cache(maxsize=8)
def _initializer(module: nn.Module, image_shape: tuple[int, ...]):
    dummy = jnp.zeros((1, *image_shape), jnp.float32)
    return jax.jit(lambda rng: module.init(rng, dummy)["params"])


def fresh_params(target: ProtectedModel, seed: int) -> Any:
    """Newly initialised weights of the target's architecture (training from scratch)."""
    return on_host(_initializer(target.module, tuple(target.image_shape))(jax.random.key(seed)))


def _target_of(model: ProtectedModel) -> ProtectedModel:
    return dataclasses.replace(model, params=on_host(model.params))


def load_setting(workdir: str | Path, licence: Licence | str | Path,
                 baseline_workdir: str | Path | None = None, seed: int = 0) -> Setting:
    """Restore the protected model (and the baseline), check the licence, load both data splits."""
    if not isinstance(licence, Licence):
        licence = Licence.load(licence)
    try:
        model = load_protected(workdir)
    except FileNotFoundError as err:
        raise AttackSetupError(f"cannot attack {workdir}: {err}") from None
    except CheckpointError as err:
        raise AttackSetupError(f"cannot restore {workdir}: {err}") from None
    if not model.meta.get("protected", model.meta.get("licence_fingerprint") is not None):
        raise AttackSetupError(f"{workdir} holds an unprotected model; pass the protected workdir "
                               "as --workdir and the unprotected one as --baseline_workdir")
    try:
        model.check_licence(licence)
    except LicenceError as err:
        raise AttackSetupError(f"{err}; pass the licence the model was trained for") from None
    baseline = None
    if baseline_workdir is not None:
        try:
            base_model = load_protected(baseline_workdir)
        except (FileNotFoundError, CheckpointError) as err:
            raise AttackSetupError(f"cannot load the baseline {baseline_workdir}: {err}") from None
        if tuple(base_model.image_shape) != tuple(model.image_shape) or \
                base_model.meta["num_classes"] != model.meta["num_classes"] or \
                base_model.meta["dataset"] != model.meta["dataset"]:
            raise AttackSetupError(
                f"the baseline {baseline_workdir} was trained on {base_model.meta['dataset']} "
                f"{tuple(base_model.image_shape)}, the protected model on {model.meta['dataset']} "
                f"{tuple(model.image_shape)}; pass a baseline trained on the same data")
        baseline = _target_of(base_model)
    test_images, test_labels = model.test_data()
    train_images, train_labels = model.split("train")
    return Setting(protected=_target_of(model), licence=licence,
                   train_images=train_images, train_labels=train_labels,
                   test_images=test_images, test_labels=test_labels, baseline=baseline, seed=seed)
