"""Start training from a trained model's parameters (`config.init_from`): a seller's base, so
that each buyer's protected copy costs a fine-tuning run rather than a full training run.

The base is a workdir (its metadata names the checkpoint directory) or an Orbax checkpoint
directory of one. Every parameter of the new model must exist in the base with the same shape;
the only exception, on request (`config.init_new_head`), is a classifier head whose class count
differs, which keeps its fresh initialisation. Mismatches are named, path by path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from isnn_jax.training import checkpoints, metadata
from isnn_jax.training.config import ConfigError

MAX_LISTED = 6  # mismatching paths named in one error


def base_checkpoint_dir(path: str) -> str:
    """The checkpoint directory `config.init_from` names (a workdir or a checkpoint directory)."""
    root = Path(path)
    if "://" not in path and not root.exists():
        raise ConfigError(f"config.init_from={path!r} does not exist; name a trained workdir or "
                          "its checkpoint directory")
    if (root / metadata.METADATA_FILE).exists():
        record = metadata.read(root)
        return checkpoints.checkpoint_dir(root, record.get("checkpoint_dir", ""))
    return path if "://" in path else str(root.absolute())


def _paths(tree: Any) -> dict[str, Any]:
    return {"/".join(str(getattr(p, "key", p)) for p in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _listed(paths: list[str]) -> str:
    more = f" and {len(paths) - MAX_LISTED} more" if len(paths) > MAX_LISTED else ""
    return ", ".join(paths[:MAX_LISTED]) + more


def graft(fresh: Any, base: Any, *, num_classes: int, new_head: bool) -> tuple[Any, list[str]]:
    """`fresh` with every leaf taken from `base`; returns (parameters, re-initialised paths)."""
    base_leaves = _paths(base)
    fresh_leaves = _paths(fresh)
    missing = sorted(set(fresh_leaves) - set(base_leaves))
    extra = sorted(set(base_leaves) - set(fresh_leaves))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the base lacks {_listed(missing)}")
        if extra:
            parts.append(f"the model lacks {_listed(extra)}")
        raise ConfigError(f"config.init_from: the base's parameters do not fit this model "
                          f"({'; '.join(parts)}); train from the same config.model as the base")
    head, wrong = [], []
    for path, leaf in fresh_leaves.items():
        theirs = np.shape(base_leaves[path])
        if theirs == tuple(leaf.shape):
            continue
        if leaf.shape and leaf.shape[-1] == num_classes and theirs and theirs[-1] != num_classes:
            head.append(path)
        else:
            wrong.append(f"{path} {theirs} -> {tuple(leaf.shape)}")
    if wrong:
        raise ConfigError(f"config.init_from: shapes differ: {_listed(wrong)}; train from the "
                          "same config.model as the base")
    if head and not new_head:
        raise ConfigError(f"config.init_from: the base's head has another class count "
                          f"({_listed(head)}); pass --config.init_new_head=True to re-initialise "
                          "it")
    take = set(fresh_leaves) - set(head)

    def pick(path: tuple, leaf: Any) -> Any:
        name = "/".join(str(getattr(p, "key", p)) for p in path)
        return np.asarray(base_leaves[name], dtype=leaf.dtype) if name in take else leaf

    return jax.tree_util.tree_map_with_path(pick, fresh), sorted(head)


def load_base(path: str, fresh: Any, *, num_classes: int,
              new_head: bool) -> tuple[Any, int, list[str]]:
    """(parameters for the new run, the base's step, re-initialised paths) from `path`."""
    directory = base_checkpoint_dir(path)
    try:
        base, step = checkpoints.restore_saved_params(directory)
    except checkpoints.CheckpointError as err:
        raise ConfigError(f"config.init_from: {err}") from None
    params, head = graft(fresh, base, num_classes=num_classes, new_head=new_head)
    return params, step, head
