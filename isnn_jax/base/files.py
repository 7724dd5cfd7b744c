"""The one way isnn_jax writes a file: a temporary file beside it, flushed, then moved in place.

A crash or a full disk never leaves a half-written checkpoint record, report, export or
licence; `exclusive` refuses to replace an existing file without a window in which two writers
could both succeed (a hard link, which fails if the name exists).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from isnn_jax.base.errors import OutputError


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o644,
                 exclusive: bool = False) -> Path:
    """Write `data` (text is UTF-8) to `path` atomically with permissions `mode`.

    With `exclusive` an existing `path` raises FileExistsError and is left untouched; any other
    failure is an OutputError naming the path. The temporary file is created with mode 0600, so
    a secret is never readable while in transit.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    try:
        _write(path, payload, mode, exclusive)
    except FileExistsError:
        raise
    except OSError as err:
        raise OutputError(f"cannot write {path} ({err.strerror or err}); choose a writable "
                          "location") from None
    return path


def _write(path: Path, payload: bytes, mode: int, exclusive: bool) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if not exclusive:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links: check, then rename
                if path.exists():
                    raise FileExistsError(path) from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike[str], record: Any, *, sort_keys: bool = False) -> Path:
    """`record` as indented JSON (non-ASCII kept), atomically."""
    text = json.dumps(record, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n"
    return write_atomic(path, text)
