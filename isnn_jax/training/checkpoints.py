"""Orbax checkpoints of the training state: async atomic saves, verified restores.

Items are saved separately (`params`, `opt_state`, `step`) so that inference restores the
parameters alone. The `step` item also records a SHA-256 digest of the parameters and of the
optimiser state: Orbax restores silently garbled array bytes, so the digest is what detects them.
A newest checkpoint that fails its integrity check (a digest mismatch; a truncated, missing or
undecodable file) is reported and set aside, and the previous good one is used. Any other restore
failure (a transient storage error, a checkpoint that does not fit the config's model) is a named
error that changes nothing on disk. Keys are never part of the state, so no checkpoint holds key
material.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from isnn_jax.base.errors import OperationError
from isnn_jax.protection.step import TrainState

CHECKPOINT_DIR = "checkpoints"
CORRUPT_SUFFIX = ".corrupt"
log = logging.getLogger("isnn_jax")


class CheckpointError(OperationError):
    """No usable checkpoint where one was expected; the message names each failure and the fix."""


class CheckpointUnavailableError(CheckpointError):
    """A checkpoint could not be read for a reason other than damage (I/O, permissions); nothing
    on disk was changed, so a rerun after a transient failure resumes normally."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint is intact but does not fit the state the config builds (another model or
    optimiser); nothing on disk was changed."""


# TensorStore's status codes for a file that is missing, shorter than recorded, or undecodable.
_DAMAGE_STATUSES = ("DATA_LOSS:", "OUT_OF_RANGE:", "NOT_FOUND:")
# Orbax's messages for an intact checkpoint whose tree or shapes differ from the target's.
_MISMATCH_MARKERS = ("tree structures do not match", "is not compatible with the stored shape")


def failure_kind(err: BaseException) -> str:
    """A restore failure's kind: "damaged" (failed integrity check: may be set aside),
    "mismatch" (intact, but not this state's tree or shapes) or "unavailable" (anything else).

    Only positive evidence of damage counts as damage; anything unrecognised is "unavailable",
    so an unexpected error never costs a checkpoint.
    """
    if type(err) is CheckpointError:  # raised by the digest and step-record checks below
        return "damaged"
    if isinstance(err, (json.JSONDecodeError, FileNotFoundError, NotADirectoryError)):
        return "damaged"
    text = str(err)
    if isinstance(err, KeyError) and "was not found in the checkpoint" in text:
        return "damaged"  # a committed step without one of its items
    if isinstance(err, ValueError) and not isinstance(err, json.JSONDecodeError):
        if text.lstrip().startswith(_DAMAGE_STATUSES):
            return "damaged"
        if any(marker in text for marker in _MISMATCH_MARKERS):
            return "mismatch"
    return "unavailable"


def _not_damage(err: BaseException, step: int, directory: str) -> CheckpointError:
    """The named error for a restore failure that is not damage; the checkpoint stays as it is."""
    if failure_kind(err) == "mismatch":
        return CheckpointMismatchError(
            f"the checkpoint at step {step} in {directory} does not fit the state this config "
            f"builds ({_short(err)}); nothing was changed on disk. Resume with the config the run "
            "was trained with, or train the new config in a new --workdir")
    return CheckpointUnavailableError(
        f"could not read the checkpoint at step {step} in {directory} ({_short(err)}); this is "
        "not a failed integrity check, so nothing was changed on disk. If the storage failed "
        "transiently, rerun the same command; otherwise fix the cause (permissions, credentials, "
        "the network)")


def checkpoint_dir(workdir: str | Path, directory: str = "") -> str:
    """Where checkpoints go: `directory` if given (a local path or a gs:// URL), else WORKDIR/checkpoints."""
    if directory:
        return directory if "://" in directory else str(Path(directory).absolute())
    return str(Path(workdir).absolute() / CHECKPOINT_DIR)


def has_checkpoint(directory: str) -> bool:
    """Whether `directory` holds a step directory (temporary and set-aside ones do not count)."""
    path = epath.Path(directory)
    return path.is_dir() and any(child.name.isdigit() for child in path.iterdir())


def manager(directory: str, keep: int = 3, *, read_only: bool = False) -> ocp.CheckpointManager:
    """The checkpoint manager of `directory` (asynchronous saves, `keep` newest kept).

    A writable manager removes temporary directories that a crash in the middle of a save left.
    """
    if not read_only:
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=True,
                                               cleanup_tmp_directories=True)
        return ocp.CheckpointManager(directory, options=options)
    # Read-only: the values Orbax would otherwise announce it is forcing, and its notice that
    # the directory is read only (asked for) kept off stderr for this call alone.
    options = ocp.CheckpointManagerOptions(max_to_keep=None, save_interval_steps=0, create=False,
                                           enable_async_checkpointing=True, read_only=True,
                                           cleanup_tmp_directories=False)
    absl_logger, notice = logging.getLogger("absl"), _ReadOnlyNotice()
    absl_logger.addFilter(notice)
    try:
        return ocp.CheckpointManager(directory, options=options)
    finally:
        absl_logger.removeFilter(notice)


class _ReadOnlyNotice(logging.Filter):
    """Drops Orbax's "Given directory is read only" notice; passes every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Given directory is read only" not in record.getMessage()


def tree_digest(tree: Any) -> str:
    """SHA-256 over every leaf's dtype, shape and bytes, in tree order (multi-host safe)."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        array = leaf.addressable_data(0) if isinstance(leaf, jax.Array) else leaf
        array = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save(mngr: ocp.CheckpointManager, state: TrainState, *, force: bool = False) -> bool:
    """Start an asynchronous save of `state` at its step, with digests of its contents."""
    step = int(np.asarray(state.step.addressable_data(0)))
    record = {"step": step, "params_sha256": tree_digest(state.params),
              "opt_state_sha256": tree_digest(state.opt_state)}
    return mngr.save(step, force=force, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        opt_state=ocp.args.StandardSave(state.opt_state),
        step=ocp.args.JsonSave(record),
    ))


def _verify(what: str, tree: Any, record: dict[str, Any]) -> None:
    expected = record.get(f"{what}_sha256")
    if expected is None:
        log.warning("checkpoint at step %s has no %s digest (written by an older version); "
                    "its contents are not verified", record.get("step"), what)
    elif tree_digest(tree) != expected:
        raise CheckpointError(f"the {what} do not match their recorded digest (garbled data)")


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:160]}{'...' if len(text) > 160 else ''}"


def _restore_state_at(mngr: ocp.CheckpointManager, target: TrainState, step: int) -> TrainState:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract.params),
        opt_state=ocp.args.StandardRestore(abstract.opt_state),
        step=ocp.args.JsonRestore(),
    ))
    record = restored["step"]
    if not isinstance(record, dict) or record.get("step") != step:
        raise CheckpointError(f"its step record {record!r} does not name step {step}")
    _verify("params", restored["params"], record)
    _verify("opt_state", restored["opt_state"], record)
    value = np.asarray(step, dtype=target.step.dtype)
    step_value = jax.make_array_from_callback(value.shape, target.step.sharding, lambda i: value[i])
    return TrainState(step=step_value, params=restored["params"], opt_state=restored["opt_state"])


def _set_aside(directory: str, steps: list[int]) -> list[str]:
    """Rename unusable step directories to STEP.corrupt[N] (process 0), so the steps can be saved again."""
    names = []
    for step in steps:
        source = epath.Path(directory) / str(step)
        target, n = source.parent / f"{step}{CORRUPT_SUFFIX}", 1
        while target.exists():
            target, n = source.parent / f"{step}{CORRUPT_SUFFIX}{n}", n + 1
        if jax.process_index() == 0:
            source.rename(target)
        names.append(target.name)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("isnn_jax: corrupt checkpoints set aside")
    return names


def restore_latest_state(mngr: ocp.CheckpointManager, target: TrainState) -> TrainState | None:
    """The newest usable state laid out like `target`, or None when there is no checkpoint.

    Newer checkpoints that fail their integrity check are reported and set aside; if none is
    usable this raises CheckpointError rather than silently starting from scratch. Any other
    failure raises CheckpointUnavailableError or CheckpointMismatchError and renames nothing.
    """
    directory = str(mngr.directory)
    failures: list[tuple[int, str]] = []
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            state = _restore_state_at(mngr, target, step)
        except Exception as err:  # Orbax and TensorStore raise many types for damaged files
            if failure_kind(err) != "damaged":
                raise _not_damage(err, step, directory) from err
            failures.append((step, _short(err)))
            log.warning("checkpoint at step %d in %s is unusable (%s); trying the previous one",
                        step, directory, _short(err))
            continue
        if failures:
            names = _set_aside(directory, [s for s, _ in failures])
            mngr.reload()
            log.warning("resuming from step %d; the unusable checkpoints were kept as %s in %s",
                        step, ", ".join(names), directory)
        return state
    if failures:
        listed = "; ".join(f"step {s}: {reason}" for s, reason in failures)
        raise CheckpointError(
            f"no usable checkpoint in {directory} ({listed}). Restore the directory from a backup, "
            "or move it aside to train from scratch")
    return None


def restore_params(directory: str, abstract_params: Any, step: int | None = None) -> tuple[Any, int]:
    """The verified parameters (newest usable step by default) and the step they come from."""
    mngr = manager(directory, read_only=True)
    try:
        steps = sorted(mngr.all_steps(), reverse=True) if step is None else [step]
        if not steps:
            raise FileNotFoundError(
                f"no checkpoint in {directory}; train a model into this workdir "
                "first (python -m isnn_jax.train --workdir ...)"
            )
        # Restore onto this machine's first device, whatever topology the run was saved from.
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                              abstract_params)
        failures = []
        for candidate in steps:
            try:
                restored = mngr.restore(candidate, args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(target), step=ocp.args.JsonRestore()))
                _verify("params", restored["params"], restored["step"])
            except Exception as err:  # Orbax and TensorStore raise many types for damaged files
                if failure_kind(err) != "damaged":
                    raise _not_damage(err, candidate, directory) from err
                failures.append(f"step {candidate}: {_short(err)}")
                log.warning("checkpoint at step %d in %s is unusable (%s)", candidate, directory,
                            _short(err))
                continue
            if failures:
                log.warning("using the checkpoint at step %d instead", candidate)
            return restored["params"], candidate
        raise CheckpointError(f"no usable checkpoint in {directory} ({'; '.join(failures)}); "
                              "restore it from a backup or retrain")
    finally:
        mngr.close()


def restore_saved_params(directory: str) -> tuple[Any, int]:
    """The newest checkpoint's parameters as they were saved (host NumPy arrays, no target
    needed: a base model of another shape can be read and compared), verified by digest."""
    if not has_checkpoint(directory):
        raise CheckpointUnavailableError(f"no checkpoint in {directory}; name a trained workdir "
                                         "or an Orbax checkpoint directory of one")
    mngr = manager(directory, read_only=True)
    try:
        step = max(mngr.all_steps())
        try:
            restored = mngr.restore(step, args=ocp.args.Composite(
                params=ocp.args.StandardRestore(), step=ocp.args.JsonRestore()))
        except Exception as err:  # Orbax and TensorStore raise many types
            raise CheckpointError(f"cannot read the parameters at step {step} in {directory} "
                                  f"({_short(err)})") from None
        params = jax.tree.map(np.asarray, restored["params"])
        _verify("params", params, restored["step"])
        return params, step
    finally:
        mngr.close()
