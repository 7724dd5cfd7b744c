"""The training input as a fixed number of data streams, so the global batch of every step is
the same whether one process or many read the data.

The train split is cut into `streams` contiguous TFDS shards; stream `s` draws `batch/streams`
examples per step from shard `s` in an order that depends on (seed, s, step) only. The global
batch is the streams' batches in stream order. Process `p` of `P` reads only its own streams
(`s` in `[p*streams/P, (p+1)*streams/P)`), so a 2-process run and a 1-process run with
`streams=2` see identical global batches.

Training augmentation (off by default): `random_crop=P` pads every image by P zero pixels on
each side and crops a random H x W window back out; `random_flip` mirrors a random half of the
images left to right. Stream `s` draws both at step `t` from `np.random.default_rng([seed, s,
t])`, so a step's batch stays a pure function of (seed, step): resuming replays it bit for bit,
and any process count sees the same augmented global batch.

`StreamOrder` is that order (and those draws) alone, knowing only the shards' sizes; each
stream computes its epoch's permutation once (`EpochOrder`). `TrainStreams` applies it to
shards decoded into memory; the streaming input (streaming.py) and the device input
(training/feeds.py) apply the same order to record files and to device-resident shards.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from isnn_jax.data.common import check_augment
from isnn_jax.data.pipeline import EpochOrder, steps_per_epoch, to_float
from isnn_jax.data.sources import load_split

_STREAM_SEED_STRIDE = 1_000_003  # stream s orders its shard with seed + s * stride


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The random draws of one stream's augmentation at one step, one entry per image: the
    crop window's top-left corner in the padded image (None without random_crop) and whether
    to mirror it (None without random_flip). Applied to uint8 images on the host
    (`apply_augmentation`) or on a device (training/feeds.py), with the same result."""

    pad: int
    top: np.ndarray | None
    left: np.ndarray | None
    flip: np.ndarray | None


def draw_augmentation(rng: np.random.Generator, count: int, random_crop: int,
                      random_flip: bool) -> Augmentation:
    """The draws of `augment` for `count` images: first every window's offsets, then the flips."""
    top = left = flip = None
    if random_crop:
        top = rng.integers(0, 2 * int(random_crop) + 1, count)
        left = rng.integers(0, 2 * int(random_crop) + 1, count)
    if random_flip:
        flip = rng.random(count) < 0.5
    return Augmentation(int(random_crop), top, left, flip)


def apply_augmentation(images: np.ndarray, draws: Augmentation) -> np.ndarray:
    """NHWC images cropped (after zero padding by `draws.pad`) and flipped as drawn."""
    count, height, width = images.shape[:3]
    if draws.top is not None:
        pad = draws.pad
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        rows = (draws.top[:, None] + np.arange(height))[:, :, None]
        cols = (draws.left[:, None] + np.arange(width))[:, None, :]
        images = padded[np.arange(count)[:, None, None], rows, cols]
    if draws.flip is not None:
        images = np.where(draws.flip[:, None, None, None], images[:, :, ::-1], images)
    return images


def augment(images: np.ndarray, rng: np.random.Generator, random_crop: int,
            random_flip: bool) -> np.ndarray:
    """NHWC images randomly cropped (after zero padding by `random_crop`) and flipped, drawn
    from `rng`: first every image's window offsets, then its flip."""
    return apply_augmentation(images, draw_augmentation(rng, images.shape[0], random_crop,
                                                        random_flip))


@dataclasses.dataclass(frozen=True)
class StreamOrder:
    """Which examples of each stream's shard batch `step` takes, and their augmentation: what
    every input pipeline (memory, streaming, device) shares, knowing only the shard sizes.

    Each stream keeps its current epoch's permutation (`EpochOrder`), so a step costs a slice,
    not a permutation of the whole shard."""

    sizes: tuple[int, ...]  # examples in each of this process's streams' shards
    per_stream: int
    seed: int
    first_stream: int
    random_crop: int = 0
    random_flip: bool = False

    @functools.cached_property
    def _orders(self) -> tuple[EpochOrder, ...]:
        return tuple(EpochOrder(size, self.per_stream,
                                self.seed + (self.first_stream + offset) * _STREAM_SEED_STRIDE)
                     for offset, size in enumerate(self.sizes))

    @property
    def steps_per_epoch(self) -> int:
        """Steps until the smallest shard is exhausted (the same on every process for even splits)."""
        return min(steps_per_epoch(size, self.per_stream) for size in self.sizes)

    def indices(self, step: int) -> tuple[np.ndarray, ...]:
        """Per stream, the indices into its shard of its share of batch `step`: exactly
        `batch_indices(size, per_stream, seed + stream * 1_000_003, step)`."""
        return tuple(order(step) for order in self._orders)

    def augmentation(self, step: int) -> tuple[Augmentation, ...] | None:
        """Per stream, the augmentation draws of batch `step` (None when augmentation is off)."""
        if not (self.random_crop or self.random_flip):
            return None
        return tuple(draw_augmentation(np.random.default_rng([self.seed, stream, step]),
                                       self.per_stream, self.random_crop, self.random_flip)
                     for stream in range(self.first_stream, self.first_stream + len(self.sizes)))


def assemble(parts: Sequence[tuple[np.ndarray, np.ndarray]],
             draws: Sequence[Augmentation] | None) -> dict[str, np.ndarray]:
    """The streams' (uint8 images, labels) of one step, augmented, as the host batch: float32
    images in [0, 1] and int32 labels, the streams in order."""
    images = [part[0] if draws is None else apply_augmentation(part[0], draws[offset])
              for offset, part in enumerate(parts)]
    return {"image": to_float(np.concatenate(images)),
            "label": np.concatenate([part[1] for part in parts]).astype(np.int32)}


@dataclasses.dataclass(frozen=True)
class TrainStreams:
    """This process's streams: their shards and the per-stream batch size."""

    shards: tuple[tuple[np.ndarray, np.ndarray], ...]
    per_stream: int
    seed: int
    first_stream: int
    random_crop: int = 0  # pad by this many zero pixels, then crop a random window back
    random_flip: bool = False  # mirror a random half of the images left to right

    @functools.cached_property
    def order(self) -> StreamOrder:
        """Which examples (and augmentation) every step takes from the shards."""
        return StreamOrder(tuple(images.shape[0] for images, _ in self.shards), self.per_stream,
                           self.seed, self.first_stream, self.random_crop, self.random_flip)

    @property
    def steps_per_epoch(self) -> int:
        """Steps until the smallest shard is exhausted (the same on every process for even splits)."""
        return self.order.steps_per_epoch

    @property
    def num_examples(self) -> int:
        """Examples this process reads."""
        return sum(images.shape[0] for images, _ in self.shards)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's share of global batch `step`: float32 images in [0, 1], int32 labels."""
        parts = [(images[index], labels[index])
                 for (images, labels), index in zip(self.shards, self.order.indices(step))]
        return assemble(parts, self.order.augmentation(step))


def stream_count(streams: int, global_batch: int, process_count: int) -> int:
    """The number of streams (0 means one per process), checked against batch and processes."""
    streams = streams or process_count
    if streams % process_count:
        raise ValueError(f"config.data.streams={streams} does not divide by the {process_count} "
                         f"processes; use a multiple of {process_count}")
    if global_batch % streams:
        raise ValueError(f"train.batch_size={global_batch} does not divide by "
                         f"config.data.streams={streams}; use a multiple of {streams}")
    return streams


def load_streams(name: str, *, global_batch: int, streams: int, seed: int, process_index: int,
                 process_count: int, data_dir: str | None = None,
                 source_dir: str | None = None, image_key: str = "", label_key: str = "",
                 image_shape: Sequence[int] = (), random_crop: int = 0,
                 random_flip: bool = False) -> TrainStreams:
    """Read this process's streams of the train split (nothing of other processes' streams);
    `random_crop` and `random_flip` augment every batch (module docstring)."""
    check_augment(random_crop, random_flip)
    streams = stream_count(streams, global_batch, process_count)
    per_process = streams // process_count
    first = process_index * per_process
    shards = tuple(load_split(name, "train", data_dir=data_dir, source_dir=source_dir,
                              image_key=image_key, label_key=label_key, image_shape=image_shape,
                              process_index=stream, process_count=streams)
                   for stream in range(first, first + per_process))
    return TrainStreams(shards, global_batch // streams, seed, first, int(random_crop),
                        bool(random_flip))
