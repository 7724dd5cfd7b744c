"""Serving export of the bare model: serialised StableHLO (jax.export), without the licence.

python -m isnn_jax.export --workdir DIR --out FILE.isnn [--force]

The file is a zip archive holding `model.jax_exported` (the function images -> logits with the
parameters as constants, batch size symbolic, lowered for CPU, CUDA and TPU) and
`metadata.json` (image shape, classes, transform parameters, licence and model fingerprints).
It holds no secret and no key: the exported function is the bare network, and the caller
applies the licence's transform first (`api.apply_licence(licence, images)`), exactly as
`python -m isnn_jax.predict --export FILE --licence FILE` does.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
import tempfile
import zipfile
from functools import cached_property
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from isnn_jax.cli import ArgumentParser, command

FORMAT = "isnn-export/1"
PLATFORMS = ("cpu", "cuda", "tpu")
MODEL_ENTRY = "model.jax_exported"
METADATA_ENTRY = "metadata.json"
PUBLIC_FIELDS = ("dataset", "image_shape", "num_classes", "class_names", "input_range",
                 "protected", "transform", "licence_fingerprint")


class ExportError(ValueError):
    """An export file is missing or unusable; the message names the fix."""


def export_bytes(module: Any, params: Any, image_shape: tuple[int, ...],
                 metadata: dict[str, Any], platforms: tuple[str, ...] = PLATFORMS) -> bytes:
    """The export archive for `module` with `params` baked in, as bytes."""
    batch = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((*batch, *image_shape), jnp.float32)
    logits = jax.jit(lambda images: module.apply({"params": params}, images))
    exported = jax.export.export(logits, platforms=platforms)(spec)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(METADATA_ENTRY, json.dumps({"format": FORMAT, **metadata}, indent=2,
                                                    sort_keys=True, ensure_ascii=False))
        archive.writestr(MODEL_ENTRY, bytes(exported.serialize()))
    return buffer.getvalue()


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write bytes to a temporary file next to `path`, then rename it into place."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ExportError(f"directory {path.parent} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def export_workdir(workdir: str | Path, out: str | Path) -> dict[str, Any]:
    """Export the newest checkpoint of a trained workdir to `out`; returns the export metadata."""
    from isnn_jax import api
    from isnn_jax.model_fingerprint import model_fingerprint

    model = api.load_protected(workdir)
    metadata = {name: model.meta.get(name) for name in PUBLIC_FIELDS}
    metadata.update(model=model.meta.get("model"), checkpoint_step=model.step,
                    model_fingerprint=model_fingerprint(model.params))
    write_atomic(out, export_bytes(model.module, model.params, model.image_shape, metadata))
    return metadata


@dataclasses.dataclass(frozen=True)
class ExportedModel:
    """A loaded export: `logits(images)` of the bare network (apply the licence first)."""

    exported: Any  # jax.export.Exported
    meta: dict[str, Any]
    path: Path

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The HWC shape the model takes."""
        return tuple(int(v) for v in self.meta["image_shape"])

    @cached_property
    def _call(self) -> Any:
        return jax.jit(self.exported.call)

    def logits(self, images: Any) -> np.ndarray:
        """Logits of float32 NHWC images in [0, 1] (already carrying the licence's transform)."""
        from isnn_jax.api import check_image_batch

        return np.asarray(self._call(jnp.asarray(check_image_batch(images, self.image_shape))))


def is_export(path: str | Path) -> bool:
    """Whether `path` is an export archive (a zip file with a model entry)."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return MODEL_ENTRY in archive.namelist()


def load_export(path: str | Path) -> ExportedModel:
    """Read an export archive written by `export_workdir`."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"export file {path} not found; write one with python -m "
                          "isnn_jax.export --workdir DIR --out FILE")
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read(METADATA_ENTRY))
            payload = archive.read(MODEL_ENTRY)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as err:
        raise ExportError(f"{path} is not an isnn_jax export ({err}); write one with python -m "
                          "isnn_jax.export") from None
    if meta.get("format") != FORMAT:
        raise ExportError(f"{path} is not an {FORMAT} file (format {meta.get('format')!r})")
    try:
        exported = jax.export.deserialize(bytearray(payload))
    except Exception as err:  # flatbuffers and version checks raise several types
        raise ExportError(f"{path}: the serialised model cannot be loaded ({type(err).__name__}:"
                          f" {err}); export it again with this version of JAX") from None
    return ExportedModel(exported=exported, meta=meta, path=path)


def check_new_output(path: str | Path, force: bool) -> None:
    """Refuse to replace an existing output file unless --force asks for it (checked before any
    work is done)."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"--out {path} is a directory; name the export file to write")
    if path.exists() and not force:
        raise ExportError(f"{path} already exists; pass --force to replace it or choose another "
                          "--out")


@command
def main(argv: list[str] | None = None) -> int:
    """Command line: export a workdir's newest checkpoint (errors: isnn_jax.cli)."""
    parser = ArgumentParser(prog="python -m isnn_jax.export", description=__doc__)
    parser.add_argument("--workdir", required=True, help="trained workdir")
    parser.add_argument("--out", required=True, help="export file to write (e.g. model.isnn)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    check_new_output(args.out, args.force)
    meta = export_workdir(args.workdir, args.out)
    size = Path(args.out).stat().st_size
    print(json.dumps({"export": str(args.out), "bytes": size, "platforms": list(PLATFORMS),
                      **{k: meta[k] for k in ("image_shape", "num_classes", "licence_fingerprint",
                                              "model_fingerprint", "checkpoint_step")}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
