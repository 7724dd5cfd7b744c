"""Classifiers as black boxes: images in, labels out, from a model, a Python callable or a command.

A classifier takes float32 NHWC images in [0, 1] exactly as given (the caller applies any
transform) and returns class indices (N,) or scores (N, classes). Verification and tracing
need nothing more, so they work on a model they can only query.

The command protocol: the command is run with one extra argument, the path of a .npy file of
float32 NHWC images, and prints a JSON list of class indices (or of score rows) to stdout;
`python -m isnn_jax.serve EXPORT` is one such command.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from typing import Callable, Sequence

import numpy as np

from isnn_jax.base import compilation
from isnn_jax.base.errors import OperationError
from isnn_jax.runtime.model import ProtectedModel, batched

Classifier = Callable[[np.ndarray], np.ndarray]


class BlackBoxError(OperationError):
    """A black-box classifier failed or answered in an unusable form."""


def as_labels(outputs: object, count: int) -> np.ndarray:
    """Class indices from labels (N,) or scores (N, C); checks there is one answer per image."""
    array = np.asarray(outputs)
    if array.ndim == 2:
        array = array.argmax(axis=-1)
    if array.shape != (count,):
        raise BlackBoxError(f"the classifier answered shape {array.shape} for {count} images; "
                            "return one class index (or one score row) per image")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise BlackBoxError("the classifier answered non-integer labels; return class indices")
        array = array.astype(np.int64)
    return array


def model_classifier(model: ProtectedModel, batch_size: int = 1024) -> Classifier:
    """The argmax of a loaded network, jitted, in fixed-size batches."""
    predict = compilation.jit(lambda images: model.net(images).argmax(axis=-1))
    return lambda images: batched(predict, np.asarray(images, np.float32), batch_size)


def command_classifier(command: str | Sequence[str], timeout_s: float = 600.0) -> Classifier:
    """A classifier that runs `command IMAGES.npy` and reads a JSON list of labels from stdout."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if not argv:
        raise BlackBoxError("the model command is empty; pass e.g. 'python -m isnn_jax.serve "
                            "model.isnn'")

    def classify(images: np.ndarray) -> np.ndarray:
        folder = tempfile.mkdtemp(prefix="isnn-query-")  # mode 0700; removed below
        try:
            path = os.path.join(folder, "images.npy")
            np.save(path, np.asarray(images, np.float32))
            try:
                done = subprocess.run([*argv, path], capture_output=True, text=True,
                                      timeout=timeout_s)
            except FileNotFoundError:
                raise BlackBoxError(f"model command {argv[0]!r} not found; pass a runnable "
                                    "command") from None
            except subprocess.TimeoutExpired:
                raise BlackBoxError(f"model command timed out after {timeout_s:.0f} s") from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-3:]
            raise BlackBoxError(f"model command exited with status {done.returncode}: "
                                f"{' | '.join(tail) or '(no error output)'}")
        try:
            answer = json.loads(done.stdout)
        except json.JSONDecodeError:
            raise BlackBoxError("model command did not print JSON; it must print a list of class "
                                f"indices (got {done.stdout[:80]!r})") from None
        if isinstance(answer, dict):
            answer = answer.get("labels", answer.get("logits"))
        return as_labels(answer, images.shape[0])

    return classify
