"""Writing the security report: report.json, report.md and PNG figures, all or nothing.

Everything is written into a staging folder beside the output folder, checked for secrets, and
only then renamed into place; a crash leaves the previous report (or nothing), never half of one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from isnn_jax.attacks.markdown import render

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


class ReportError(ValueError):
    """The output folder cannot be used; the message names the fix."""


def prepare_output(out: str | Path) -> Path:
    """Check `out` can take a report and create the staging folder beside it (before any work)."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ReportError(f"--out {out} is a file; pass a folder path for the report")
        foreign = [p.name for p in out.iterdir() if p.name not in _OWN_NAMES and p.suffix != ".png"]
        if foreign:
            raise ReportError(f"--out {out} holds other files ({', '.join(sorted(foreign)[:3])}); "
                              "pass an empty or new folder (a previous report there is replaced)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ReportError(f"the parent folder {parent} of --out does not exist; create it first")
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    except OSError as err:
        raise ReportError(f"cannot write beside {out} ({err.strerror or err}); "
                          "choose a writable --out") from None


_OWN_NAMES = {REPORT_JSON, REPORT_MD}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def check_no_secret(folder: Path, secrets: list[bytes]) -> None:
    """Raise if any file in `folder` contains a secret, raw or as hex text."""
    needles = [needle for secret in secrets for needle in
               (secret, secret.hex().encode(), secret.hex().upper().encode())]
    for path in folder.rglob("*"):
        if path.is_file() and any(needle in path.read_bytes() for needle in needles):
            raise RuntimeError(f"refusing to publish: {path.name} would contain the licence secret")


def publish(report: dict[str, Any], staging: Path, out: Path, *, figures: bool = True,
            secrets: list[bytes] | None = None) -> None:
    """Write the report into `staging`, check it, then swap it into `out`."""
    figure_names: list[str] = []
    if figures:
        try:
            from isnn_jax.attacks.figures import draw_all  # matplotlib: optional, deferred
        except ImportError as err:
            report["figures_skipped"] = (f"matplotlib is not installed ({err}); "
                                         "install it with pip install 'isnn_jax[report]'")
        else:
            figure_names = draw_all(report, staging)
    report["figures"] = figure_names
    (staging / REPORT_JSON).write_text(json.dumps(_json_safe(report), indent=2) + "\n",
                                       encoding="utf-8")
    (staging / REPORT_MD).write_text(render(report), encoding="utf-8")
    check_no_secret(staging, secrets or [])
    os.chmod(staging, 0o755)
    out = Path(out)
    if out.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, retired / out.name)
        os.replace(staging, out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, out)
