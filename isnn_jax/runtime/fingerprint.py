"""The model fingerprint: a SHA-256 over a model's parameters, recorded in the seller's registry.

It identifies an exact copy of the weights (names, dtypes, shapes and bytes of every leaf). A
copy that was fine-tuned or pruned has another fingerprint; tracing then relies on behaviour
(isnn_jax.seller.trace), which this hash only complements.
"""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np

DOMAIN = b"isnn-jax/model-fingerprint/v1\x00"


def model_fingerprint(params: Any) -> str:
    """SHA-256 (64 hex chars) over every parameter's tree path, dtype, shape and bytes."""
    digest = hashlib.sha256(DOMAIN)
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    for path, leaf in leaves:
        array = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype.str}|{array.shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def short(fingerprint: str) -> str:
    """The first 16 hex characters, for display."""
    return fingerprint[:16]
