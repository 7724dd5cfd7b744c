"""The one loaded-model type: a trained network and the metadata that says what it expects.

From a workdir the module and its parameters are known (training, evaluation, attacks read
them); from an export only the compiled function is (`compiled`). Prediction, verification and
tracing run the keyed transform and then `net` directly, so they test what the weights do,
whatever the metadata says (a leaked copy may have lost or altered it).
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from isnn_jax.base import compilation
from isnn_jax.data import data_options, load_split, to_float
from isnn_jax.models import build_model
from isnn_jax.protection.licence import Licence, LicenceError, TransformSpec
from isnn_jax.protection.transforms import apply_transform, check_images
from isnn_jax.training import checkpoints, metadata

Net = Callable[[jax.Array], jax.Array]


def check_image_batch(images: Any, image_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Validate a batch of images (float NHWC in [0, 1], finite) and return it as float32."""
    try:
        array = np.asarray(images)
    except (TypeError, ValueError) as err:
        raise ValueError(f"images are not a numeric array ({err}); pass a float32 NHWC array") from None
    if array.ndim == 3 and image_shape is not None and tuple(array.shape) == tuple(image_shape):
        raise ValueError(f"got one image of shape {array.shape}; pass a batch: images[None]")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise ValueError(f"images must be floating point in [0, 1], got dtype {array.dtype}; "
                         "pass a float32 NHWC array")
    check_images(jax.ShapeDtypeStruct(array.shape, array.dtype), None)
    if image_shape is not None and tuple(array.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"images have shape {tuple(array.shape[1:])} (HWC) but the model expects "
            f"{tuple(image_shape)}; resize them to {image_shape[0]}x{image_shape[1]} with "
            f"{image_shape[2]} channel(s)"
        )
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError("images contain NaN or Inf pixels; clean or drop those images")
    low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"pixel values span [{low:g}, {high:g}] but must lie in [0, 1]; "
            "divide 8-bit images by 255"
        )
    return array


def apply_licence(licence: Licence, images: Any) -> jax.Array:
    """The keyed transform alone: the legal inputs `t_k(images)`."""
    return apply_transform(licence.transform, licence.key(), jnp.asarray(check_image_batch(images)))


@dataclasses.dataclass(frozen=True)
class ProtectedModel:
    """A trained network (protected or not) and what is known about it.

    `module` and `params` are set for a model restored from a workdir (or built in memory);
    `compiled` is an export's function (its parameters cannot be read out).
    """

    meta: dict[str, Any]
    source: str = ""
    step: int = 0
    module: nn.Module | None = None
    params: Any = None
    compiled: Net | None = None

    @classmethod
    def of(cls, module: nn.Module, params: Any, *, image_shape: tuple[int, ...],
           num_classes: int, source: str = "", step: int = 0) -> "ProtectedModel":
        """A model from a module and its parameters (no workdir: tests, attacks, fresh weights)."""
        meta = {"image_shape": list(image_shape), "num_classes": int(num_classes)}
        return cls(meta=meta, source=source, step=step, module=module, params=params)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The HWC shape of the images the model takes."""
        return tuple(int(v) for v in self.meta["image_shape"])

    @property
    def num_classes(self) -> int:
        """How many classes the model outputs."""
        return int(self.meta["num_classes"])

    def net(self, images: jax.Array) -> jax.Array:
        """Logits of images exactly as given (jax-traceable; apply the licence first)."""
        if self.module is None:
            return self.compiled(images)
        return self.module.apply({"params": self.params}, images)

    @cached_property
    def _apply(self) -> Net:
        if self.module is None:
            return compilation.jit(self.compiled)
        module = self.module  # the parameters are an argument, not constants compiled in
        logits = compilation.jit(lambda params, images: module.apply({"params": params}, images))
        return lambda images: logits(self.params, images)

    def check_licence(self, licence: Licence) -> None:
        """Raise LicenceError unless the metadata names `licence` as the model's."""
        expected = self.meta.get("licence_fingerprint")
        if expected is None:
            raise LicenceError(f"{self.source} holds an unprotected model; it takes no licence")
        if licence.fingerprint() != expected:
            raise LicenceError(f"this licence ({licence.fingerprint()}) is for a different model: "
                               f"{self.source} was trained for licence {expected}; use the "
                               "licence file that came with this model")

    def logits(self, images: Any, licence: Licence | None = None) -> jax.Array:
        """Class logits; with the licence the keyed transform is applied first."""
        batch = jnp.asarray(check_image_batch(images, self.image_shape))
        if licence is not None:
            self.check_licence(licence)
            batch = apply_transform(licence.transform, licence.key(), batch)
        return self._apply(batch)

    def predict(self, images: Any, licence: Licence | None = None) -> np.ndarray:
        """Predicted class indices."""
        return np.asarray(self.logits(images, licence).argmax(-1))

    def test_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The test split of the model's dataset as float32 images in [0, 1] and int32 labels."""
        return self.split("test")

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """A split of the model's dataset (as its config reads it): float32 images, int32 labels."""
        data = self.meta.get("config", {}).get("data", {})
        images, labels = load_split(self.meta["dataset"], split, **data_options(data))
        return to_float(images), labels.astype(np.int32)


def load_protected(workdir: str | Path, step: int | None = None) -> ProtectedModel:
    """Restore the newest (or the given) checkpoint of a trained workdir."""
    workdir = Path(workdir)
    meta = metadata.read(workdir)
    module = build_model(meta["model"], int(meta["num_classes"]))
    shape = (1, *meta["image_shape"])
    abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros(shape)))["params"]
    directory = checkpoints.checkpoint_dir(workdir, meta.get("checkpoint_dir", ""))
    params, step = checkpoints.restore_params(directory, abstract, step)
    return ProtectedModel(meta=meta, source=str(workdir), step=int(step), module=module,
                          params=params)


def batched(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
            batch_size: int) -> np.ndarray:
    """`fn` over fixed-size chunks of `images` (the last one padded), so it compiles once."""
    count = images.shape[0]
    size = max(1, min(batch_size, count))
    outputs = []
    for start in range(0, count, size):
        chunk = images[start:start + size]
        short = size - chunk.shape[0]
        if short:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], short, axis=0)])
        outputs.append(np.asarray(fn(chunk))[:size - short])
    return np.concatenate(outputs)


def keyed_probabilities(net: Net, spec: TransformSpec | None) -> Callable:
    """A jitted `(key, images) -> softmax(net(t_key(images)))`; `spec=None`: no transform."""

    def probabilities(key: jax.Array, images: jax.Array) -> jax.Array:
        if spec is not None:
            images = apply_transform(spec, key, images)
        return jax.nn.softmax(net(images).astype(jnp.float32), axis=-1)

    return compilation.jit(probabilities)
