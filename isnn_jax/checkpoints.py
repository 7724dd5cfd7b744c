"""Orbax checkpoints of the training state: async saves, a bounded number kept, newest restored.

Items are saved separately (`params`, `opt_state`, `step`) so that inference restores the
parameters alone. Keys are never part of the state, so no checkpoint holds key material.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from isnn_jax.step import TrainState

CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(workdir: str | Path, directory: str = "") -> str:
    """Where checkpoints go: `directory` if given (a local path or a gs:// URL), else WORKDIR/checkpoints."""
    if directory:
        return directory if "://" in directory else str(Path(directory).absolute())
    return str(Path(workdir).absolute() / CHECKPOINT_DIR)


def manager(directory: str, keep: int = 3, *, read_only: bool = False) -> ocp.CheckpointManager:
    """The checkpoint manager of `directory` (asynchronous saves, `keep` newest kept)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           enable_async_checkpointing=True, read_only=read_only)
    return ocp.CheckpointManager(directory, options=options)


def save(mngr: ocp.CheckpointManager, state: TrainState, *, force: bool = False) -> bool:
    """Start an asynchronous save of `state` at its step."""
    step = int(jax.device_get(state.step))
    return mngr.save(step, force=force, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        opt_state=ocp.args.StandardSave(state.opt_state),
        step=ocp.args.JsonSave({"step": step}),
    ))


def restore_state(mngr: ocp.CheckpointManager, target: TrainState, step: int | None = None) -> TrainState:
    """The state at `step` (default: newest), laid out like `target` (shapes and shardings)."""
    step = mngr.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract.params),
        opt_state=ocp.args.StandardRestore(abstract.opt_state),
        step=ocp.args.JsonRestore(),
    ))
    value = np.asarray(restored["step"]["step"], dtype=target.step.dtype)
    step_value = jax.make_array_from_callback(value.shape, target.step.sharding, lambda i: value[i])
    return TrainState(step=step_value, params=restored["params"],
                      opt_state=restored["opt_state"])


def restore_params(directory: str, abstract_params: Any, step: int | None = None) -> tuple[Any, int]:
    """The parameters alone (newest step by default) and the step they come from."""
    mngr = manager(directory, read_only=True)
    try:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(
                f"no checkpoint in {directory}; train a model into this workdir "
                "first (python -m isnn_jax.train --workdir ...)"
            )
        # Restore onto this machine's first device, whatever topology the run was saved from.
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                              abstract_params)
        restored = mngr.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(target)))
        return restored["params"], step
    finally:
        mngr.close()
