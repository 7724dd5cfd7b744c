"""The training input as a fixed number of data streams, so the global batch of every step is
the same whether one process or many read the data.

The train split is cut into `streams` contiguous TFDS shards; stream `s` draws `batch/streams`
examples per step from shard `s` in an order that depends on (seed, s, step) only. The global
batch is the streams' batches in stream order. Process `p` of `P` reads only its own streams
(`s` in `[p*streams/P, (p+1)*streams/P)`), so a 2-process run and a 1-process run with
`streams=2` see identical global batches.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from isnn_jax.data.pipeline import batch_indices, load_split, steps_per_epoch, to_float

_STREAM_SEED_STRIDE = 1_000_003  # stream s orders its shard with seed + s * stride


@dataclasses.dataclass(frozen=True)
class TrainStreams:
    """This process's streams: their shards and the per-stream batch size."""

    shards: tuple[tuple[np.ndarray, np.ndarray], ...]
    per_stream: int
    seed: int
    first_stream: int

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
            seed = self.seed + (self.first_stream + offset) * _STREAM_SEED_STRIDE
            index = batch_indices(shard_images.shape[0], self.per_stream, seed, step)
            images.append(shard_images[index])
            labels.append(shard_labels[index])
        return {"image": to_float(np.concatenate(images)),
                "label": np.concatenate(labels).astype(np.int32)}


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
                 source_dir: str | None = None) -> TrainStreams:
    """Read this process's streams of the train split (nothing of other processes' streams)."""
    streams = stream_count(streams, global_batch, process_count)
    per_process = streams // process_count
    first = process_index * per_process
    shards = tuple(load_split(name, "train", data_dir=data_dir, source_dir=source_dir,
                              process_index=stream, process_count=streams)
                   for stream in range(first, first + per_process))
    return TrainStreams(shards, global_batch // streams, seed, first)
