"""The workdir's readable metadata file: what the model expects, never the secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from isnn_jax.base.files import write_json

METADATA_FILE = "isnn_metadata.json"
FORMAT = "isnn-model/1"


def write(workdir: str | Path, record: dict[str, Any]) -> Path:
    """Atomically write the metadata JSON (temporary file, then rename)."""
    return write_json(Path(workdir) / METADATA_FILE, {"format": FORMAT, **record}, sort_keys=True)


def read(workdir: str | Path) -> dict[str, Any]:
    """The metadata of a trained workdir, with a clear error when it is not one."""
    path = Path(workdir) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {workdir} is not a trained isnn_jax workdir "
            "(train one with python -m isnn_jax.train --workdir ...)"
        )
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("format") != FORMAT:
        raise ValueError(f"{path} is not an {FORMAT} metadata file")
    return record


# Config fields that may differ between a run and its resumption: they decide when to log, save,
# stop and evaluate, where the same files live, or how the same step is computed (the paths
# give the same parameters up to float rounding, the input pipelines the same batches), never
# the schedule, the data order or the model. Every other field is compared (docs/decisions.md).
RESUMABLE_FIELDS = (
    "train.stop_after_steps", "train.log_every_steps", "train.checkpoint_every_steps",
    "train.keep_checkpoints", "train.checkpoint_dir", "train.allow_changed_config",
    "data.data_dir", "data.source_dir", "data.pipeline", "data.workers", "data.prefetch",
    "licence.copyright", "distributed", "parallelism",
    "model.conv", "eval.",
)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def config_changes(stored: dict[str, Any], current: dict[str, Any],
                   defaults: dict[str, Any] | None = None) -> dict[str, tuple[Any, Any]]:
    """Fields (dotted paths) whose value differs between `stored` and `current`, as (old, new).

    Fields in RESUMABLE_FIELDS are skipped; a field the stored config predates counts as its
    value in `defaults`; fields the current config no longer has are ignored.
    """
    as_json = lambda tree: json.loads(json.dumps(tree))  # tuples become lists, as stored
    old, new = _flatten(as_json(stored)), _flatten(as_json(current))
    fallback = _flatten(as_json(defaults)) if defaults is not None else {}
    changes = {}
    for path, value in new.items():
        if any(path == field or (field.endswith(".") and path.startswith(field))
               for field in RESUMABLE_FIELDS):
            continue
        before = old.get(path, fallback.get(path, value))
        if before != value:
            changes[path] = (before, value)
    return changes


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    """`a.b 1 -> 2, c.d 'x' -> 'y'`: each changed field, old -> new."""
    show = lambda value: repr(tuple(value)) if isinstance(value, list) else repr(value)
    return ", ".join(f"{path} {show(old)} -> {show(new)}" for path, (old, new) in changes.items())
