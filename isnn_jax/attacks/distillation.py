"""Distillation: train a fresh student on the protected model's outputs for clean queries.

Queries are clean training images, cycled, each pass after the first shifted by up to two
pixels so that every query is new; the student (same architecture, fresh weights) learns the
teacher's softmax outputs and is scored on clean test images. Controls: the unprotected
baseline as teacher, and the protected model queried through the licence.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from isnn_jax.base import compilation
from isnn_jax.attacks.fit import fit
from isnn_jax.attacks.measure import accuracy
from isnn_jax.attacks.setting import Deadline, Setting, eval_subset, fresh_params
from isnn_jax.runtime.model import ProtectedModel
from isnn_jax.protection.transforms import apply_transform

MAX_SHIFT = 2


def make_queries(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` clean queries: the images cycled, passes after the first randomly shifted."""
    rng = np.random.default_rng(seed)
    passes = []
    for index in range(-(-count // images.shape[0])):
        batch = images[:count - index * images.shape[0]]
        if index:
            shifts = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=(batch.shape[0], 2))
            shifted = np.empty_like(batch)
            for dy in range(-MAX_SHIFT, MAX_SHIFT + 1):  # one vectorised roll per shift
                for dx in range(-MAX_SHIFT, MAX_SHIFT + 1):
                    chosen = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
                    shifted[chosen] = np.roll(batch[chosen], (dy, dx), axis=(1, 2))
            batch = shifted
        passes.append(batch)
    return np.concatenate(passes)


@functools.lru_cache(maxsize=8)
def _softmax_of(module: nn.Module):
    return compilation.jit(
        lambda params, images: jax.nn.softmax(module.apply({"params": params}, images)))


def teacher_outputs(target: ProtectedModel, queries: np.ndarray, transform=None,
                    batch_size: int = 1024) -> np.ndarray:
    """The teacher's softmax outputs for the queries (optionally through a keyed transform)."""
    apply = _softmax_of(target.module)
    outputs = []
    for start in range(0, queries.shape[0], batch_size):
        batch = jnp.asarray(queries[start:start + batch_size])
        if transform is not None:
            batch = transform(batch)
        outputs.append(np.asarray(apply(target.params, batch)))
    return np.concatenate(outputs)


def run(setting: Setting, budget: Any, eval_images: int, deadline: Deadline) -> dict[str, Any]:
    """Student accuracy on clean test images for each query budget and teacher."""
    images, labels = eval_subset(setting, eval_images)
    test_size = setting.test_images.shape[0]
    student_module = setting.protected.module
    legal = functools.partial(apply_transform, setting.spec, setting.licence.key())
    teachers: list[tuple[str, ProtectedModel, Any]] = [("protected", setting.protected, None)]
    if setting.baseline is not None:
        teachers.append(("baseline", setting.baseline, None))
    rows, stopped = [], False
    multiples = sorted(int(m) for m in budget.query_multiples)
    for multiple in multiples:
        if rows and deadline.expired():
            stopped = True
            break
        queries = make_queries(setting.train_images, multiple * test_size, setting.seed + multiple)
        chosen = teachers[:1]
        if multiple == multiples[-1]:  # the control before the baseline: it checks this pipeline
            chosen.append(("protected_with_licence", setting.protected, legal))
        chosen += teachers[1:]
        for name, teacher, transform in chosen:
            if rows and deadline.expired():
                stopped = True
                break
            soft = teacher_outputs(teacher, queries, transform)
            student, steps_run = fit(student_module, fresh_params(setting.protected, setting.seed + 5),
                                     queries, soft, steps=int(budget.steps),
                                     batch_size=int(budget.batch_size),
                                     learning_rate=float(budget.learning_rate),
                                     seed=setting.seed + multiple, deadline=deadline)
            rows.append({"teacher": name, "query_multiple": multiple, "queries": int(queries.shape[0]),
                         "steps": steps_run,
                         "student_accuracy": accuracy(setting.protected, student, images, labels)})
        if stopped:
            break
    protected_rows = [row["student_accuracy"] for row in rows if row["teacher"] == "protected"]
    return {"rows": rows, "stopped_early": stopped, "eval_images": int(images.shape[0]),
            "steps": int(budget.steps), "test_split_size": int(test_size),
            "max_accuracy": max(protected_rows, default=float("nan"))}
