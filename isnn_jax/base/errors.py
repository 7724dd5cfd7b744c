"""The error families of isnn_jax, so that one place (isnn_jax.cli) maps each to an exit code.

Bad input is a ValueError (or FileNotFoundError) whose message names the problem and the fix;
`OperationError` is a run that failed for a reason the user can act on (a checkpoint that
cannot be read, a diverging loss, a black box that answered nonsense); `Interrupted` is a run
stopped on request after saving its progress. Every layer raises its own subclasses.
"""

from __future__ import annotations


class OperationError(RuntimeError):
    """A run failed for a reason the user can fix; the message names it (exit 2)."""


class Interrupted(RuntimeError):
    """A run stopped on request after saving its progress; rerunning resumes it (exit 75)."""


class OutputError(OperationError):
    """A file could not be written (a missing directory, no permission, a full disk)."""
