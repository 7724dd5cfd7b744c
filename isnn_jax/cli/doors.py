"""How every `python -m isnn_jax.X` door fails the same way: one parser class, one decorator.

`ArgumentParser` reports a bad command line as a UsageError instead of printing the usage
block; `command` turns bad input (ValueError, FileNotFoundError) and failed operations
(isnn_jax.base.errors.OperationError) into one `error:` line and exit 2, an interruption into a
`stopped:` line and exit 75, and `--help` into exit 0. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from isnn_jax.base.errors import Interrupted, OperationError
from isnn_jax.cli.logs import quiet_libraries

EXIT_OK = 0
EXIT_USAGE = 2  # bad input: one `error:` line names the problem and the fix
EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: interrupted after saving; rerun to resume

_Main = TypeVar("_Main", bound=Callable[..., Any])
KNOWN_ERRORS = (ValueError, FileNotFoundError, OperationError)


class UsageError(ValueError):
    """The command line itself is wrong (a missing or unknown flag, a bad value)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a UsageError (one `error:` line, exit 2)
    instead of printing the usage block, and never abbreviates flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        """Raise instead of exiting, so `command` prints the line and returns 2."""
        raise UsageError(f"{message} (see {self.prog} --help)")


def exit_code(err: BaseException) -> int | None:
    """Print the one line for a known error and return its exit code; None for anything else
    (a bug, which the caller re-raises with its traceback)."""
    if isinstance(err, Interrupted):
        print(f"stopped: {err}", file=sys.stderr)
        return EXIT_PREEMPTED
    if isinstance(err, KNOWN_ERRORS):
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return None


def command(main: _Main) -> _Main:
    """Decorate a command's `main(argv) -> int`: known errors become one `error:` line and
    exit 2, a preemption exit 75, `--help` exit 0; Orbax's read-only notices are silenced."""

    @functools.wraps(main)
    def door(*args: Any, **kwargs: Any) -> int:
        quiet_libraries()
        try:
            return int(main(*args, **kwargs) or EXIT_OK)
        except SystemExit as stop:  # argparse's --help; a library asking to exit
            return stop.code if isinstance(stop.code, int) else EXIT_OK if stop.code is None \
                else EXIT_USAGE
        except Exception as err:  # noqa: BLE001 (re-raised unless it is a known error)
            code = exit_code(err)
            if code is None:
                raise
            return code

    return door  # type: ignore[return-value]
