"""The `streaming` input: this process's streams read from the prepared TFDS array_record
files batch by batch, with grain, so host memory does not grow with the dataset.

The streams, their shards (the same `tfds.even_splits` cut as the memory input) and the
order of every step (`StreamOrder`) are those of streams.py, so the batch of step s is the
memory input's batch of step s, bit for bit, and resuming at any step replays it. Grain runs
the per-step work (read the step's records from each shard, decode them exactly as the memory
input does, augment, convert to float32) as a `MapDataset` over the steps: in `workers`
processes (0: one thread of this process) that read `prefetch` batches ahead, in step order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
from absl import flags

from isnn_jax.data.common import check_augment
from isnn_jax.data.pipeline import OWN_DATA
from isnn_jax.data.sources import Records, open_records
from isnn_jax.data.streams import StreamOrder, assemble, stream_count


@dataclasses.dataclass(frozen=True)
class StepBatches:
    """Batch `step` of this process's streams, read from their record sources (picklable:
    grain's worker processes each get a copy)."""

    records: tuple[Records, ...]
    order: StreamOrder

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        keys = self.order.indices(int(step))
        parts = [records.decode(index.tolist()) for records, index in zip(self.records, keys)]
        return assemble(parts, self.order.augmentation(int(step)))


@dataclasses.dataclass(frozen=True)
class StreamingStreams:
    """This process's streams, read on demand from TFDS record files (nothing decoded ahead)."""

    records: tuple[Records, ...]
    order: StreamOrder

    @property
    def steps_per_epoch(self) -> int:
        """Steps until the smallest shard is exhausted."""
        return self.order.steps_per_epoch

    @property
    def num_examples(self) -> int:
        """Examples this process reads."""
        return sum(self.order.sizes)

    @property
    def per_stream(self) -> int:
        return self.order.per_stream

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """Batch `step`, read in this thread (what `feed` gives for the same step)."""
        return StepBatches(self.records, self.order)(step)

    def feed(self, start: int, stop: int, *, workers: int = 0, prefetch: int = 2) -> GrainFeed:
        """Batches `start` .. `stop - 1` read ahead by grain (see the module docstring)."""
        return GrainFeed(StepBatches(self.records, self.order), start, stop, workers=workers,
                         prefetch=prefetch)


def _grain_flags_readable() -> None:
    """Grain's worker processes read one absl flag of grain's; outside an absl program (a test,
    a notebook) the flags are never parsed and reading it fails. Mark that one flag (only) as
    given, at its default, as grain does for its own flags in its workers."""
    name = "grain_enable_multiprocess_worker_profiling"
    if not flags.FLAGS.is_parsed() and name in flags.FLAGS:
        flags.FLAGS[name].present = True


class GrainFeed:
    """Batches of consecutive steps from a grain pipeline over the steps; `batch(step)` must be
    asked in order, and a step out of order starts the pipeline again from it."""

    def __init__(self, make_batch: StepBatches, start: int, stop: int, *, workers: int = 0,
                 prefetch: int = 2) -> None:
        self._make, self._stop = make_batch, int(stop)
        self.workers, self.prefetch = int(workers), int(prefetch)
        self._iterator: Any = None
        self._next = int(start)

    def _open(self, start: int) -> None:
        self.close()
        steps = grain.MapDataset.range(start, max(start + 1, self._stop)).map(self._make)
        if self.workers:
            _grain_flags_readable()
            dataset = steps.to_iter_dataset(grain.ReadOptions(num_threads=1,
                                                              prefetch_buffer_size=1))
            dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self.workers, per_worker_buffer_size=max(1, self.prefetch)))
        else:
            threads = 1 if self.prefetch else 0
            dataset = steps.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                              prefetch_buffer_size=self.prefetch))
        self._iterator = iter(dataset)
        self._next = start

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """The batch of `step`."""
        if self._iterator is None or step != self._next:
            self._open(step)
        self._next = step + 1
        batch = next(self._iterator)
        if self.workers:  # out of grain's shared memory, which is then released
            batch = {name: np.array(value) for name, value in batch.items()}
        return batch

    def close(self) -> None:
        """Stop grain's threads and worker processes."""
        if self._iterator is not None:
            close = getattr(self._iterator, "close", None)
            if close is not None:
                close()
            self._iterator = None

    def __enter__(self) -> GrainFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_streams(name: str, *, global_batch: int, streams: int, seed: int, process_index: int,
                 process_count: int, data_dir: str | None = None,
                 source_dir: str | None = None, image_key: str = "", label_key: str = "",
                 image_shape: Sequence[int] = (), random_crop: int = 0,
                 random_flip: bool = False) -> StreamingStreams:
    """This process's streams of a TFDS name's train split, opened for streaming: the same
    shards, order and augmentation as `load_streams`, nothing read yet."""
    check_augment(random_crop, random_flip)
    streams = stream_count(streams, global_batch, process_count)
    per_process = streams // process_count
    first = process_index * per_process
    records = tuple(open_records(name, "train", data_dir=data_dir, source_dir=source_dir,
                                 image_key=image_key, label_key=label_key,
                                 image_shape=image_shape, process_index=stream,
                                 process_count=streams)
                    for stream in range(first, first + per_process))
    order = StreamOrder(tuple(len(r.source) for r in records), global_batch // streams, seed,
                        first, int(random_crop), bool(random_flip))
    return StreamingStreams(records, order)


def train_share_bytes(name: str, process_count: int, **options: Any) -> int | None:
    """Bytes of a process's share of the train split once decoded (uint8 images), counted
    without reading any image; None for image_folder and arrays (always read into memory)."""
    if name in OWN_DATA:
        return None
    records = open_records(name, "train", process_index=0, process_count=process_count,
                           **options)  # the first share is the largest
    return len(records.source) * int(np.prod(records.spec.image_shape))
