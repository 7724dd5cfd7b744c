"""Serving export of the bare model: serialised StableHLO (jax.export), without the licence.

The file is a zip archive holding `model.jax_exported` (the function images -> logits with the
parameters as constants, batch size symbolic, lowered for CPU, CUDA and TPU) and
`metadata.json` (image shape, classes, transform parameters, licence and model fingerprints).
It holds no secret and no key: the exported function is the bare network, and the caller
applies the licence's transform first (`api.apply_licence(licence, images)`), exactly as
`python -m isnn_jax.predict --export FILE --licence FILE` does.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from isnn_jax.base.files import write_atomic
from isnn_jax.runtime.fingerprint import model_fingerprint
from isnn_jax.runtime.model import ProtectedModel, load_protected

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


def export_workdir(workdir: str | Path, out: str | Path, *, force: bool = False) -> dict[str, Any]:
    """Export the newest checkpoint of a trained workdir to `out` (an existing file only with
    `force`); returns the export's metadata."""
    check_new_output(out, force)
    model = load_protected(workdir)
    metadata = {name: model.meta.get(name) for name in PUBLIC_FIELDS}
    metadata.update(model=model.meta.get("model"), checkpoint_step=model.step,
                    model_fingerprint=model_fingerprint(model.params))
    out = Path(out)
    if not out.parent.is_dir():
        raise ExportError(f"directory {out.parent} does not exist; create it first")
    write_atomic(out, export_bytes(model.module, model.params, model.image_shape, metadata))
    return metadata


def is_export(path: str | Path) -> bool:
    """Whether `path` is an export archive (a zip file with a model entry)."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return MODEL_ENTRY in archive.namelist()


def load_export(path: str | Path) -> ProtectedModel:
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
    return ProtectedModel(meta=meta, source=str(path), step=int(meta.get("checkpoint_step") or 0),
                          compiled=exported.call)


def load_model(path: str | Path) -> ProtectedModel:
    """A trained workdir (a directory) or an export file."""
    path = Path(path)
    if path.is_dir():
        return load_protected(path)
    if path.is_file():
        return load_export(path)
    raise FileNotFoundError(f"model {path} not found; pass a trained workdir or an export file "
                            "(python -m isnn_jax.export)")


def check_new_output(path: str | Path, force: bool) -> None:
    """Refuse to replace an existing output file unless --force asks for it (checked before any
    work is done)."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"--out {path} is a directory; name the export file to write")
    if path.exists() and not force:
        raise ExportError(f"{path} already exists; pass --force to replace it or choose another "
                          "--out")
