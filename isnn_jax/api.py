"""The public surface for buyers and sellers.

    from isnn_jax import api
    lic = api.Licence.load("buyer.licence.json")      # or api.Licence.issue(copyright=...)
    model = api.load_protected("workdir")              # restores the newest checkpoint
    logits = model.logits(images, licence=lic)         # images: float32 NHWC in [0, 1]
    logits = model.logits(images)                      # no licence: what a thief gets
    x_legal = api.apply_licence(lic, images)           # the keyed transform alone
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from isnn_jax import checkpoints, metadata
from isnn_jax.licence import Licence, LicenceError, TransformSpec
from isnn_jax.models import build_model
from isnn_jax.transforms import apply_transform, check_images

__all__ = ["Licence", "LicenceError", "TransformSpec", "ProtectedModel", "load_protected",
           "apply_licence", "check_image_batch"]


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
    """A restored model plus the metadata that says what it expects."""

    module: nn.Module
    params: Any
    meta: dict[str, Any]
    step: int
    workdir: Path

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The HWC shape of the images the model takes."""
        return tuple(self.meta["image_shape"])

    @cached_property
    def _apply(self) -> Any:
        return jax.jit(lambda params, images: self.module.apply({"params": params}, images))

    def check_licence(self, licence: Licence) -> None:
        """Raise LicenceError unless `licence` is the one this model was trained for."""
        expected = self.meta.get("licence_fingerprint")
        if expected is None:
            raise LicenceError(f"{self.workdir} holds an unprotected model; it takes no licence")
        if licence.fingerprint() != expected:
            raise LicenceError(
                f"this licence ({licence.fingerprint()}) is for a different model; "
                f"{self.workdir} was trained for licence {expected}"
            )

    def logits(self, images: Any, licence: Licence | None = None) -> jax.Array:
        """Class logits; with the licence the keyed transform is applied first."""
        batch = jnp.asarray(check_image_batch(images, self.image_shape))
        if licence is not None:
            self.check_licence(licence)
            batch = apply_transform(licence.transform, licence.key(), batch)
        return self._apply(self.params, batch)

    def predict(self, images: Any, licence: Licence | None = None) -> np.ndarray:
        """Predicted class indices."""
        return np.asarray(self.logits(images, licence).argmax(-1))

    def test_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The test split of the model's dataset as float32 images in [0, 1] and int32 labels."""
        from isnn_jax.data import load_split, to_float

        data = self.meta.get("config", {}).get("data", {})
        images, labels = load_split(self.meta["dataset"], "test",
                                    data_dir=data.get("data_dir") or None,
                                    source_dir=data.get("source_dir") or None)
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
    return ProtectedModel(module=module, params=params, meta=meta, step=int(step), workdir=workdir)
