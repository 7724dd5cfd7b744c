"""The train step's input, as `config.data.pipeline` asks (data/feeds.py): which pipeline a
run uses, and the `device` pipeline, whose shards live on the accelerators.

`device`: this process's uint8 train shards are copied once to each of its devices; each step
the host computes only the step's indices (and augmentation draws: the same `StreamOrder` as
the host pipelines), and every device gathers its own rows of the batch, augments them and
converts them to float32 in [0, 1] there, in one small jitted function. Nothing but indices
crosses to the device per step, and the batch is bit for bit the `memory` pipeline's: a
gather, crop and mirror move bytes only, and the float32 values come from a 256-entry table
computed by the host's own conversion.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from isnn_jax.data import to_float
from isnn_jax.data.feeds import AUTO_MEMORY_LIMIT, Prefetch
from isnn_jax.data.streaming import StreamingStreams
from isnn_jax.data.streams import TrainStreams
from isnn_jax.training.parallel import DataParallel, DeviceBatch


def choose_pipeline(requested: str, name: str, share_bytes: int | None) -> tuple[str, str]:
    """(pipeline, why) for `requested` (data/feeds.py PIPELINES): `auto` is memory up to
    AUTO_MEMORY_LIMIT decoded bytes per host, else streaming; image_folder and arrays have no
    record files to stream from, so `streaming` reads them into memory (and says so)."""
    size = "" if share_bytes is None else f"{_size(share_bytes)} decoded per host"
    if requested == "auto":
        if share_bytes is None:
            return "memory", f"auto: {name} is read into memory"
        if share_bytes <= AUTO_MEMORY_LIMIT:
            return "memory", f"auto: {size}, under {AUTO_MEMORY_LIMIT / 2**30:g} GiB"
        return "streaming", f"auto: {size}, over {AUTO_MEMORY_LIMIT / 2**30:g} GiB"
    if requested == "streaming" and share_bytes is None:
        return "memory", (f"{name} has no TFDS record files to stream from, so it is read into "
                          f"memory (the batches are the same)")
    return requested, "as config.data.pipeline asks" + (f"; {size}" if size else "")


def _size(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{count} bytes"


# uint8 -> float32 as `to_float` computes it on the host. A table, not a division: XLA may
# compile `x / 255` as a multiplication by the reciprocal, which differs in the last bit for
# 126 of the 256 values (measured on the CPU backend).
_FLOAT_OF_BYTE = to_float(np.arange(256, dtype=np.uint8))


@functools.partial(jax.jit, static_argnames=("pad",))
def _gather(images: jax.Array, labels: jax.Array, scale: jax.Array, index: jax.Array,
            top: jax.Array | None, left: jax.Array | None, flip: jax.Array | None,
            pad: int) -> tuple[jax.Array, jax.Array]:
    """One device's rows, gathered, cropped (after zero padding by `pad`) and mirrored as
    drawn, as float32 in [0, 1] (`scale`: `_FLOAT_OF_BYTE`): `apply_augmentation` and
    `to_float`, on the device."""
    chosen = images[index]
    if top is not None:
        count, height, width = chosen.shape[:3]
        padded = jnp.pad(chosen, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        rows = (top[:, None] + jnp.arange(height))[:, :, None]
        cols = (left[:, None] + jnp.arange(width))[:, None, :]
        chosen = padded[jnp.arange(count)[:, None, None], rows, cols]
    if flip is not None:
        chosen = jnp.where(flip[:, None, None, None], chosen[:, :, ::-1], chosen)
    return scale[chosen.astype(jnp.int32)], labels[index]


class DeviceFeed:
    """Batches gathered on the devices from shards copied there once (module docstring)."""

    def __init__(self, streams: TrainStreams, runner: DataParallel) -> None:
        self.order = streams.order
        local_batch = self.order.per_stream * len(self.order.sizes)
        self.rows = runner.local_rows(local_batch)
        sizes = [images.shape[0] for images, _ in streams.shards]
        self._offsets = np.cumsum([0, *sizes[:-1]])
        images = np.concatenate([images for images, _ in streams.shards])
        labels = np.concatenate([labels for _, labels in streams.shards]).astype(np.int32)
        self._shards = {device: jax.device_put((images, labels, _FLOAT_OF_BYTE), device)
                        for device, _, _ in self.rows}
        self.device_bytes = images.nbytes + labels.nbytes  # per device

    def batch(self, step: int) -> DeviceBatch:
        """This process's share of batch `step`, one piece per device, still being gathered."""
        index = np.concatenate([offset + part for offset, part
                                in zip(self._offsets, self.order.indices(step))]).astype(np.int32)
        draws = self.order.augmentation(step)
        top = left = flip = None
        pad = 0
        if draws is not None:
            pad = draws[0].pad
            if draws[0].top is not None:
                top = np.concatenate([d.top for d in draws]).astype(np.int32)
                left = np.concatenate([d.left for d in draws]).astype(np.int32)
            if draws[0].flip is not None:
                flip = np.concatenate([d.flip for d in draws])
        pieces: DeviceBatch = DeviceBatch(image=[], label=[])
        for device, start, stop in self.rows:
            part = slice(start, stop)
            args = jax.device_put((index[part], None if top is None else top[part],
                                   None if left is None else left[part],
                                   None if flip is None else flip[part]), device)
            image, label = _gather(*self._shards[device], *args, pad=pad)
            pieces["image"].append(image)
            pieces["label"].append(label)
        return pieces

    def close(self) -> None:
        """Free the device copies."""
        self._shards = {}


@dataclasses.dataclass(frozen=True)
class TrainInput:
    """The train streams of a run and the pipeline that feeds them to the step."""

    pipeline: str  # memory | streaming | device (auto resolved)
    streams: TrainStreams | StreamingStreams
    workers: int = 0
    prefetch: int = 2

    @property
    def steps_per_epoch(self) -> int:
        return self.streams.steps_per_epoch

    def open(self, runner: DataParallel, start: int, stop: int) -> Any:
        """A feed of batches `start`, `start + 1`, ... (`batch(step)`, `close()`)."""
        if start >= stop:  # nothing to train: nothing placed or started
            return Prefetch(self.streams.batch, start, 0)
        if self.pipeline == "device":
            return DeviceFeed(self.streams, runner)  # type: ignore[arg-type]
        if self.pipeline == "streaming":
            return self.streams.feed(start, stop, workers=self.workers,  # type: ignore[union-attr]
                                     prefetch=self.prefetch)
        return Prefetch(self.streams.batch, start, self.prefetch)
