"""What every benchmark does with its result: the command that reproduces it, and a JSON file."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any


def command_line(script: str) -> str:
    """The shell command that reran this process: XLA_FLAGS if set, the script, its arguments."""
    flags = os.environ.get("XLA_FLAGS", "")
    return " ".join(filter(None, [f"XLA_FLAGS='{flags}'" if flags else "",
                                  f"PYTHONPATH=. python benchmarks/{script}", shlex.join(sys.argv[1:])]))


def write_record(path: str | Path, record: Any) -> Path:
    """Write `record` as indented JSON, whole or not at all (a temporary file renamed in place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(record, indent=2) + "\n")
    staging.replace(path)
    print(f"wrote {path}")
    return path
