"""How batches reach the train step: the `config.data.pipeline` choices, their options, and
the host-side read-ahead.

Every pipeline gives the same batch for the same (seed, step): `memory` gathers it from the
decoded shards (streams.py), `streaming` reads and decodes it from the TFDS record files with
grain (streaming.py), `device` gathers it from shards held on the accelerators
(training/feeds.py), and `auto` picks `memory` or `streaming` by the decoded size. A feed is
asked for steps in order (`batch(step)`); `Prefetch` computes the next few on a background
thread while the device runs the current one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from isnn_jax.data.common import DataError

PIPELINES: tuple[str, ...] = ("auto", "memory", "streaming", "device")
AUTO_MEMORY_LIMIT = 4 * 2**30  # auto: bytes of decoded uint8 train images a host holds in memory


def input_options(data: Any) -> dict[str, Any]:
    """The input pipeline a config's data group asks for (pipeline, workers, prefetch),
    checked; fields it lacks (older metadata) take their defaults."""
    data = data.to_dict() if hasattr(data, "to_dict") else dict(data or {})
    pipeline = data.get("pipeline") or "auto"
    if pipeline not in PIPELINES:
        raise DataError(f"config.data.pipeline={pipeline!r} is not one of "
                        f"{', '.join(PIPELINES)}; e.g. --config.data.pipeline=auto")
    options = {"pipeline": str(pipeline)}
    for field, default in (("workers", 0), ("prefetch", 2)):
        value = data.get(field, default)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DataError(f"config.data.{field}={value!r} must be a whole number >= 0, e.g. "
                            f"--config.data.{field}={default}")
        options[field] = int(value)
    return options


class Prefetch:
    """`make_batch(step)` for steps start, start + 1, ..., computed `depth` steps ahead on one
    background thread (depth 0: in the caller's thread). Asking for a step out of order starts
    again from it, so every step's batch stays whatever `make_batch` gives; an error raised
    while computing a batch is raised by `batch` for that step."""

    def __init__(self, make_batch: Callable[[int], Any], start: int = 0, depth: int = 2) -> None:
        self._make, self._depth, self._next = make_batch, int(depth), int(start)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, self._depth))

    def batch(self, step: int) -> Any:
        """The batch of `step`."""
        if self._depth == 0:
            return self._make(step)
        if step != self._next or self._thread is None:
            self._restart(step)
        got, value = self._queue.get()
        self._next = step + 1
        if isinstance(value, BaseException):
            self._thread = None  # the producer stopped at the error; a retry starts again
            raise value
        assert got == step, (got, step)
        return value

    def _restart(self, step: int) -> None:
        self.close()
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self._depth)
        self._next = step
        self._thread = threading.Thread(target=self._produce, args=(step, self._stop, self._queue),
                                        name="isnn-prefetch", daemon=True)
        self._thread.start()

    def _produce(self, step: int, stop: threading.Event, out: queue.Queue) -> None:
        while not stop.is_set():
            try:
                item: Any = self._make(step)
            except BaseException as err:  # noqa: BLE001: handed to the consumer, raised there
                item = err
            while not stop.is_set():
                try:
                    out.put((step, item), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return
            step += 1

    def close(self) -> None:
        """Stop the background thread (the feed may be used again: it restarts)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
