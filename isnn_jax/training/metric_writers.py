"""Metric writers: a console line, a JSONL file and TensorBoard events, without TensorFlow.

CLU's writers import TensorFlow at import time; these write TensorBoard's event format with the
`tensorboard` package alone (see docs/decisions.md). Only process 0 should create them.

A resumed run repeats the steps after its checkpoint, so on resume `metrics.jsonl` is cut back to
the checkpoint's step (each step then appears once), and the new event file starts with a
SessionLog START at the next step, which tells TensorBoard to drop the orphaned later steps.
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

from isnn_jax.base.files import write_atomic

log = logging.getLogger("isnn_jax")


class MetricWriter:
    """Writes scalar metrics to `workdir/metrics.jsonl` and `workdir/tensorboard/`."""

    def __init__(self, workdir: str | Path, *, enabled: bool = True,
                 resume_step: int | None = None) -> None:
        """`resume_step`: the step training restarts from (0 for a new run); earlier records of
        later steps, and evaluation records from that step on, are dropped first."""
        self.enabled = enabled
        self._jsonl = None
        self._events = None
        if enabled:
            workdir = Path(workdir)
            if resume_step is not None:
                truncate_jsonl(workdir / "metrics.jsonl", resume_step)
            self._jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
            self._events = EventFileWriter(str(workdir / "tensorboard"))
            if resume_step is not None:
                self._events.add_event(event_pb2.Event(
                    wall_time=time.time(), step=int(resume_step) + 1,
                    session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))

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


def truncate_jsonl(path: Path, step: int) -> int:
    """Keep the records of steps <= `step` (atomic rewrite); returns how many were dropped.

    Evaluation records (`test/...`) at `step` go too (the rerun evaluates again), and so do lines
    cut short by a kill."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            keep = record["step"] < step or (record["step"] == step and
                                             not any(k.startswith("test/") for k in record))
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        write_atomic(path, "".join(f"{line}\n" for line in kept))
        log.info("dropped %d records after step %d from %s (the resumed run writes them again)",
                 dropped, step, path)
    return dropped
