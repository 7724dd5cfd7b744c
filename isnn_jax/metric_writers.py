"""Metric writers: a console line, a JSONL file and TensorBoard events, without TensorFlow.

CLU's writers import TensorFlow at import time; these write TensorBoard's event format with the
`tensorboard` package alone (see docs/decisions.md). Only process 0 should create them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Mapping

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

log = logging.getLogger("isnn_jax")


class MetricWriter:
    """Writes scalar metrics to `workdir/metrics.jsonl` and `workdir/tensorboard/`."""

    def __init__(self, workdir: str | Path, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._jsonl = None
        self._events = None
        if enabled:
            workdir = Path(workdir)
            self._jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
            self._events = EventFileWriter(str(workdir / "tensorboard"))

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record one step's scalars in every back end."""
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in scalars.items()}
        record = {"step": int(step), **{k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in clean.items()]
        event = event_pb2.Event(wall_time=time.time(), step=int(step),
                                summary=summary_pb2.Summary(value=values))
        self._events.add_event(event)

    def flush(self) -> None:
        """Push buffered events to disk."""
        if self.enabled:
            self._events.flush()

    def close(self) -> None:
        """Flush and close every back end."""
        if self.enabled:
            self._jsonl.close()
            self._events.close()
            self.enabled = False
