"""The workdir's readable metadata file: what the model expects, never the secret."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

METADATA_FILE = "isnn_metadata.json"
FORMAT = "isnn-model/1"


def write(workdir: str | Path, record: dict[str, Any]) -> Path:
    """Atomically write the metadata JSON (temporary file, then rename)."""
    workdir = Path(workdir)
    path = workdir / METADATA_FILE
    with tempfile.NamedTemporaryFile("w", dir=workdir, delete=False, suffix=".tmp",
                                     encoding="utf-8") as handle:
        json.dump({"format": FORMAT, **record}, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(handle.name, path)
    return path


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
