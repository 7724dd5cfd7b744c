"""An input adapter trained in front of the frozen stolen model: the thief learns its own
legal transform from clean labelled images.

The adapter is a linear map of every block's values (block_size^2 * channels of them) plus a
free per-pixel offset, clipped to [0, 1]: `shared` uses one map for every block (it relaxes any
in-block permutation the same for all blocks, as the keyed shuffle is, and any pattern through
the offset), `per_position` one map per block position (it also relaxes a different
permutation per block). It starts at the identity with a zero offset (the thief knows no key)
and is trained with Adam on the thief's images, each learning rate of the sweep, keeping the
adapter with the best validation accuracy of the thief's own held-out images. With the true
permutation and pattern it is exactly the legal transform (the tests check that start).
Against the whole-image mixing the block is the whole image (a full linear map of all H*W*C
values, which contains every orthogonal mixing) and nothing is clipped (legal inputs are
unbounded there); against `mix_sphere` the map's output is scaled to that family's norm, as
its legal inputs are.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from isnn_jax.base import compilation
from isnn_jax.attacks.permutation import permutation_matrix
from isnn_jax.attacks.setting import Deadline, Setting, eval_subset, thief_data
from isnn_jax.protection.transforms import MIXING_KINDS, from_blocks, to_blocks, to_sphere

log = logging.getLogger("isnn_jax.attacks")

KINDS = ("shared", "per_position")


def initial_adapter(kind: str, image_shape: tuple[int, int, int], block_size: int,
                    permutation: np.ndarray | None = None,
                    offset: np.ndarray | None = None) -> dict[str, jax.Array]:
    """Identity map (or the given in-block permutation) and a zero (or the given) offset."""
    height, width, channels = image_shape
    size = block_size * block_size * channels
    matrix = np.eye(size, dtype=np.float32) if permutation is None else \
        permutation_matrix(np.asarray(permutation))
    if kind == "per_position":
        matrix = np.broadcast_to(matrix, (height // block_size, width // block_size, size, size))
    elif kind != "shared":
        raise ValueError(f"unknown adapter kind {kind!r}; choose from {', '.join(KINDS)}")
    start = np.zeros(image_shape, np.float32) if offset is None else np.asarray(offset, np.float32)
    return {"map": jnp.asarray(matrix), "offset": jnp.asarray(start)}


def adapt(adapter: dict[str, jax.Array], images: jax.Array, block_size: int,
          finish: str = "clip") -> jax.Array:
    """blockwise map(images) + offset, then `finish`: "clip" to [0, 1], "sphere" to the
    `mix_sphere` transform's norm (the family is public), or "none"."""
    blocks = to_blocks(images, block_size)
    matrix = adapter["map"]
    mixed = blocks @ matrix if matrix.ndim == 2 else jnp.einsum("nhwi,hwij->nhwj", blocks, matrix)
    adapted = from_blocks(mixed, block_size, images.shape[-1]) + adapter["offset"]
    if finish == "clip":
        return jnp.clip(adapted, 0, 1)
    return to_sphere(adapted) if finish == "sphere" else adapted


def linear_adapter(matrix: np.ndarray, image_shape: tuple[int, int, int]) -> dict[str, jax.Array]:
    """The whole-image adapter computing `M (x - 1/2)` for a (D, D) matrix `M` (the mixing's
    form), to be applied with block size = image side and no clipping."""
    matrix = np.asarray(matrix, np.float32)
    return {"map": jnp.asarray(matrix.T),
            "offset": jnp.asarray((-0.5 * matrix.sum(axis=1)).reshape(image_shape))}


def finish_of(spec: Any) -> str:
    """What follows a whole-image linear map to make a legal input of `spec`'s family."""
    return "sphere" if spec.kind == "mix_sphere" else "none"


def adapter_geometry(spec: Any, image_shape: tuple[int, int, int], block_size: int,
                     kinds: tuple[str, ...]) -> tuple[int, str, tuple[str, ...]]:
    """(block size, finish, kinds) against `spec`: the whole image, unclipped (on the sphere
    for `mix_sphere`), for the mixing."""
    height, width, _ = image_shape
    if spec.kind in MIXING_KINDS:
        if height != width and not block_size:
            raise ValueError(f"the whole-image adapter needs square images, got {height}x{width}; "
                             "pass --budget input_adapter.block_size=B")
        return (block_size or height), finish_of(spec), ("shared",)
    return (block_size or int(spec.block_size)), "clip", kinds


@functools.lru_cache(maxsize=8)
def _runner(module: nn.Module, block_size: int, finish: str, batch_size: int,
            learning_rate: float, steps: int):
    tx = optax.adam(learning_rate)

    def loss_fn(adapter: Any, params: Any, images: jax.Array, labels: jax.Array) -> jax.Array:
        logits = module.apply({"params": params}, adapt(adapter, images, block_size, finish))
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def run(state: tuple[Any, Any], params: Any, images: jax.Array, labels: jax.Array,
            rng: jax.Array, first: jax.Array) -> tuple[Any, Any]:
        def step(carry: tuple[Any, Any], index: jax.Array) -> tuple[tuple[Any, Any], None]:
            adapter, opt_state = carry
            chosen = jax.random.randint(jax.random.fold_in(rng, index), (batch_size,), 0,
                                        images.shape[0])
            grads = jax.grad(loss_fn)(adapter, params, images[chosen], labels[chosen])
            updates, opt_state = tx.update(grads, opt_state, adapter)
            return (optax.apply_updates(adapter, updates), opt_state), None

        return jax.lax.scan(step, state, first + jnp.arange(steps))[0]

    return compilation.jit(run), tx


@functools.lru_cache(maxsize=8)
def _counter(module: nn.Module, block_size: int, finish: str):
    def count(adapter: Any, params: Any, images: jax.Array, labels: jax.Array) -> jax.Array:
        logits = module.apply({"params": params}, adapt(adapter, images, block_size, finish))
        return (logits.argmax(-1) == labels).sum()

    return compilation.jit(count)


def adapted_accuracy(setting: Setting, adapter: Any, images: np.ndarray, labels: np.ndarray,
                     block_size: int, finish: str = "clip", batch_size: int = 500) -> float:
    """Accuracy of the frozen stolen model on adapt(images)."""
    counter = _counter(setting.protected.module, block_size, finish)
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        correct += int(counter(adapter, setting.protected.params,
                               jnp.asarray(images[start:start + batch_size]),
                               jnp.asarray(labels[start:start + batch_size])))
    return correct / images.shape[0]


def train_adapter(setting: Setting, adapter: Any, data: tuple, *, block_size: int, steps: int,
                  batch_size: int, learning_rate: float, evaluate_every: int, seed: int,
                  finish: str = "clip",
                  deadline: Deadline | None = None) -> tuple[Any, dict[str, Any]]:
    """Adam on the adapter (the model frozen); the adapter with the best validation accuracy."""
    train_x, train_y, val_x, val_y = data
    module, params = setting.protected.module, setting.protected.params
    tx = _runner(module, block_size, finish, batch_size, learning_rate, 1)[1]
    state = (adapter, tx.init(adapter))
    images, labels = jnp.asarray(train_x), jnp.asarray(train_y)
    rng = jax.random.key(seed)
    best = (adapted_accuracy(setting, adapter, val_x, val_y, block_size, finish), 0, adapter)
    curve, done = [(0, best[0])], 0
    while done < steps and not (done and deadline is not None and deadline.expired()):
        chunk = min(max(1, evaluate_every), steps - done)
        run = _runner(module, block_size, finish, batch_size, learning_rate, chunk)[0]
        state = run(state, params, images, labels, rng, jnp.int32(done))
        done += chunk
        accuracy = adapted_accuracy(setting, state[0], val_x, val_y, block_size, finish)
        curve.append((done, accuracy))
        if accuracy > best[0]:
            best = (accuracy, done, state[0])
    return best[2], {"best_validation": best[0], "best_step": best[1], "steps": done,
                     "curve": curve}


def run(setting: Setting, budget: Any, eval_images: int, deadline: Deadline) -> dict[str, Any]:
    """Every fraction x seed draw (the same draws as fine_tuning) and adapter kind."""
    images, labels = eval_subset(setting, eval_images)
    block_size, finish, kinds = adapter_geometry(setting.spec, setting.protected.image_shape,
                                               int(budget.block_size), tuple(budget.kinds))
    height, width, _ = setting.protected.image_shape
    if height % block_size or width % block_size:
        raise ValueError(f"input_adapter.block_size {block_size} does not divide the "
                         f"{height}x{width} images; pass --budget input_adapter.block_size=B")
    rows, stopped = [], False
    for index, fraction in enumerate(budget.fractions):
        for draw in range(int(budget.seeds)):
            seed = setting.seed + 100 * index + draw
            data = thief_data(setting, float(fraction), seed, float(budget.validation))
            for kind in kinds:
                if rows and deadline.expired():
                    stopped = True
                    break
                runs, best = {}, None
                for rate in budget.learning_rates:
                    start = initial_adapter(kind, setting.protected.image_shape, block_size)
                    adapter, record = train_adapter(
                        setting, start, data, block_size=block_size, steps=int(budget.steps),
                        batch_size=int(budget.batch_size), learning_rate=float(rate),
                        evaluate_every=int(budget.evaluate_every), seed=seed, finish=finish,
                        deadline=deadline)
                    runs[f"adam:{float(rate):g}"] = {k: record[k] for k in
                                                     ("best_validation", "best_step", "steps")}
                    if best is None or record["best_validation"] > best[1]:
                        best = (f"adam:{float(rate):g}", record["best_validation"], adapter)
                log.info("input_adapter %.0f%% data, seed %d, %s: validation %.2f%% (%s)",
                         100 * fraction, seed, kind, 100 * best[1], best[0])
                rows.append({"fraction": float(fraction), "seed": seed, "kind": kind,
                             "train_images": int(data[0].shape[0]),
                             "validation_images": int(data[2].shape[0]),
                             "selected": best[0], "validation": best[1], "runs": runs,
                             "accuracy": adapted_accuracy(setting, best[2], images, labels,
                                                          block_size, finish)})
            if stopped:
                break
        if stopped:
            break
    return {"rows": rows, "stopped_early": stopped, "eval_images": int(images.shape[0]),
            "block_size": block_size, "finish": finish, "kinds": list(kinds),
            "steps": int(budget.steps),
            "learning_rates": [float(r) for r in budget.learning_rates]}
