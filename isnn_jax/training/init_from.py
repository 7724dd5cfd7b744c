"""Start training from a trained model's parameters (`config.init_from`): a seller's base, so
that each buyer's protected copy costs a fine-tuning run rather than a full training run.

The base is a workdir (its metadata names the checkpoint directory) or an Orbax checkpoint
directory of one. Every parameter of the new model must exist in the base with the same shape;
the only exception, on request (`config.init_new_head`), is a classifier head whose class count
differs, which keeps its fresh initialisation. Mismatches are named, path by path.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from isnn_jax.protection.licence import Licence
from isnn_jax.training import checkpoints, metadata
from isnn_jax.training.config import ConfigError

MAX_LISTED = 6  # mismatching paths named in one error
log = logging.getLogger("isnn_jax")


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


def check_base(path: str, licence: Licence | None, *, transplanted: bool) -> None:
    """The base exists and, unless rewritten for this licence, is not another licence's model."""
    base_checkpoint_dir(path)
    if not transplanted:
        check_base_licence(path, licence.fingerprint() if licence else None)


def starting_params(config: ml_collections.ConfigDict, model: Any, image_shape: tuple[int, ...],
                    num_classes: int, rng: jax.Array, initial: Any = None, *,
                    announce: bool = False) -> Any:
    """A new run's first parameters: `initial` (a transplanted base) grafted onto the model,
    else config.init_from's, else None (fresh ones)."""
    if initial is None and not config.init_from:
        return None
    fresh = jax.device_get(jax.jit(
        lambda key: model.init(key, jnp.zeros((1, *image_shape)))["params"])(rng))
    if initial is not None:
        return graft(fresh, initial, num_classes=num_classes, new_head=False)[0]
    params, step, new_head = load_base(str(config.init_from), fresh, num_classes=num_classes,
                                       new_head=bool(config.init_new_head))
    if announce:
        log.info("starting from the parameters of %s (step %d)%s", config.init_from, step,
                 f"; re-initialised: {', '.join(new_head)}" if new_head else "")
    return params


def check_base_licence(path: str, fingerprint: str | None) -> None:
    """Refuse to fine-tune a protected base for another licence: the copy keeps answering the
    base's licence (measured on digits: 81-97% under it after 6 epochs), so a trace names the
    base's buyer. A base of no recorded licence (unprotected, or a bare checkpoint directory)
    or of the same licence is accepted."""
    root = Path(path)
    if "://" in path or not (root / metadata.METADATA_FILE).exists():
        return
    theirs = metadata.read(root).get("licence_fingerprint")
    if theirs is not None and theirs != fingerprint:
        raise ConfigError(
            f"config.init_from={path} is protected for licence {theirs}, not this run's "
            f"({fingerprint}); a copy fine-tuned from it keeps answering {theirs}. Start from an "
            "unprotected base (trained with --config.protect=False), or rewrite this one for the "
            "new licence: python -m isnn_jax.protect --base ... --transplant")


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
