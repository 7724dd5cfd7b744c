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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from isnn_jax.data.common import check_augment
from isnn_jax.data.pipeline import batch_indices, steps_per_epoch, to_float
from isnn_jax.data.sources import load_split

_STREAM_SEED_STRIDE = 1_000_003  # stream s orders its shard with seed + s * stride


@dataclasses.dataclass(frozen=True)
class TrainStreams:
    """This process's streams: their shards and the per-stream batch size."""

    shards: tuple[tuple[np.ndarray, np.ndarray], ...]
    per_stream: int
    seed: int
    first_stream: int
    random_crop: int = 0  # pad by this many zero pixels, then crop a random window back
    random_flip: bool = False  # mirror a random half of the images left to right

    @property
    def steps_per_epoch(self) -> int:
        """Steps until the smallest shard is exhausted (the same on every process for even splits)."""
        return min(steps_per_epoch(images.shape[0], self.per_stream) for images, _ in self.shards)

    @property
    def num_examples(self) -> int:
        """Examples this process reads."""
        return sum(images.shape[0] for images, _ in self.shards)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's share of global batch `step`: float32 images in [0, 1], int32 labels."""
        images, labels = [], []
        for offset, (shard_images, shard_labels) in enumerate(self.shards):
            stream = self.first_stream + offset
            seed = self.seed + stream * _STREAM_SEED_STRIDE
            index = batch_indices(shard_images.shape[0], self.per_stream, seed, step)
            chosen = shard_images[index]
            if self.random_crop or self.random_flip:
                rng = np.random.default_rng([self.seed, stream, step])
                chosen = augment(chosen, rng, self.random_crop, self.random_flip)
            images.append(chosen)
            labels.append(shard_labels[index])
        return {"image": to_float(np.concatenate(images)),
                "label": np.concatenate(labels).astype(np.int32)}


def augment(images: np.ndarray, rng: np.random.Generator, random_crop: int,
            random_flip: bool) -> np.ndarray:
    """NHWC images randomly cropped (after zero padding by `random_crop`) and flipped, drawn
    from `rng`: first every image's window offsets, then its flip."""
    count, height, width = images.shape[:3]
    if random_crop:
        pad = int(random_crop)
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        top = rng.integers(0, 2 * pad + 1, count)
        left = rng.integers(0, 2 * pad + 1, count)
        rows = (top[:, None] + np.arange(height))[:, :, None]
        cols = (left[:, None] + np.arange(width))[:, None, :]
        images = padded[np.arange(count)[:, None, None], rows, cols]
    if random_flip:
        flip = rng.random(count) < 0.5
        images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
    return images


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
