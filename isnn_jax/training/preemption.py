"""Preemption: SIGTERM (or SIGINT) asks training to checkpoint at the next step boundary and stop.

One process: a signal handler, installed only while the training loop runs, records the request.
Several processes: JAX's preemption service (started by `jax.distributed.initialize`) catches
SIGTERM on any process and agrees on one step at which every process stops, so all of them save
the same step.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import jax
from jax.experimental import multihost_utils

from isnn_jax.base.errors import Interrupted

# sysexits.h EX_TEMPFAIL: "a temporary failure; the user is invited to retry".
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingPreempted(Interrupted):
    """Training stopped on a preemption signal after saving a checkpoint at `step`."""

    def __init__(self, step: int, signal_name: str) -> None:
        super().__init__(f"preempted by {signal_name} at step {step}; a checkpoint at step {step} "
                         "was saved. Rerun the same command to resume from it")
        self.step = step
        self.signal_name = signal_name


class PreemptionWatch:
    """Context manager: while inside, a preemption signal becomes `requested(step) == True`."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}
        self._multi = False

    def __enter__(self) -> "PreemptionWatch":
        self._multi = jax.process_count() > 1
        # Several processes: JAX's own SIGTERM notifier must stay installed; a Python handler
        # would replace it. Signal handlers can only be installed from the main thread.
        if not self._multi and threading.current_thread() is threading.main_thread():
            for number in _SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(number).name

    def requested(self, step: int) -> bool:
        """Whether to save and stop before running step `step` (call at every step, all processes)."""
        if self._multi:
            try:
                reached = multihost_utils.reached_preemption_sync_point(step)
            except RuntimeError:  # the preemption service is disabled in this JAX configuration
                return False
            if reached:
                self.signal_name = "SIGTERM"
            return reached
        return self.signal_name is not None
