"""A trained network without its licence, from a workdir or an export file.

Prediction, verification and tracing run the keyed transform and then this network directly,
so they test what the weights do, whatever the metadata says (a leaked copy may have lost or
altered it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from isnn_jax.licence import TransformSpec
from isnn_jax.transforms import apply_transform

Net = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class BareModel:
    """`net(images) -> logits` (jax-traceable) and what is known about the model."""

    net: Net
    meta: dict[str, Any]
    source: str
    params: Any = None  # None when the parameters cannot be read out (an export)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The HWC shape of the images the model takes."""
        return tuple(int(v) for v in self.meta["image_shape"])

    @property
    def num_classes(self) -> int:
        """How many classes the model outputs."""
        return int(self.meta["num_classes"])


def from_workdir(workdir: str | Path) -> BareModel:
    """The newest checkpoint of a trained workdir."""
    from isnn_jax import api

    model = api.load_protected(workdir)
    params, module = model.params, model.module
    return BareModel(net=lambda images: module.apply({"params": params}, images),
                     meta=dict(model.meta), source=str(workdir), params=params)


def from_export(path: str | Path) -> BareModel:
    """An export archive written by isnn_jax.export."""
    from isnn_jax.export import load_export

    exported = load_export(path)
    return BareModel(net=exported.exported.call, meta=dict(exported.meta), source=str(path))


def load_bare_model(path: str | Path) -> BareModel:
    """A workdir (directory) or an export file."""
    path = Path(path)
    if path.is_dir():
        return from_workdir(path)
    if path.is_file():
        return from_export(path)
    raise FileNotFoundError(f"model {path} not found; pass a trained workdir or an export file "
                            "(python -m isnn_jax.export)")


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

    return jax.jit(probabilities)
