"""Reading the key out of the weights: a zero-data attack on the parameters themselves.

A thief with the weights and no data at all looks for the keyed pattern where training may
have stored it: any parameter with as many values as the input (a learned input offset, a
bias over pixels) and the kernel of any dense layer that reads the flattened input (its
columns, mean and leading singular vectors: a detector of the legal pattern lines up with
it). Each candidate is tried as an additive pattern four ways: raw, negated, and as
`+-epsilon * sign` (the Rademacher pattern's own form). The best accuracy over every candidate
is reported: a thief without data cannot rank them, so this is an upper bound on what reading
the weights gives, and at chance it shows no parameter holds the key.

For a shuffle a dense kernel over the input is read for the permutation too: rows of the
kernel that belong to neighbouring pixels of the original image are alike, so a spectral
embedding of the rows' similarity graph (averaged over every block, which all share one
permutation), turned and reflected every way and assigned to the block's pixel grid, is a
guess of where each shuffled value came from. The best guess is applied to clean images like
a licence (without the additive part, which a thief would add from the candidates above).
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from isnn_jax.base import compilation
from isnn_jax.attacks.measure import pattern_accuracies
from isnn_jax.attacks.setting import Deadline, Setting, eval_subset
from isnn_jax.attacks.unlock import cosine
from isnn_jax.protection.transforms import block_permutation, block_shuffle, to_blocks

NEIGHBOURS = 8  # similarity graph: each kernel row keeps its most similar rows
ANGLES = 24  # rotations of the 2-D embedding tried (each also reflected)


def _path_name(path: tuple[Any, ...]) -> str:
    return "/".join(str(getattr(part, "key", getattr(part, "idx", part))) for part in path)


def input_sized(shape: tuple[int, ...], image_shape: tuple[int, int, int]) -> bool:
    """A parameter with exactly as many values as one image: it could be a pattern itself."""
    return math.prod(shape) == math.prod(image_shape)


def reads_input(shape: tuple[int, ...], image_shape: tuple[int, int, int]) -> bool:
    """A kernel applied to the image itself: a dense layer over its flattened pixels, or a
    convolution over its channels (the layers a key can line up with)."""
    if len(shape) == 2:
        return shape[0] == math.prod(image_shape)
    return len(shape) == 4 and shape[2] == image_shape[-1]


def input_shaped_candidates(params: Any, image_shape: tuple[int, int, int],
                            columns: int, components: int) -> Iterator[tuple[str, np.ndarray]]:
    """(name, pattern of `image_shape`) for every parameter that could hold an input pattern.

    Parameters with exactly as many values as the image are reshaped to it; dense kernels whose
    input dimension is the flattened image give their `columns` largest columns, their mean
    column and their `components` leading left singular vectors."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name, value = _path_name(path), np.asarray(leaf, np.float32)
        if input_sized(value.shape, image_shape):
            yield name, value.reshape(image_shape)
        elif value.ndim == 2 and reads_input(value.shape, image_shape):
            norms = np.linalg.norm(value, axis=0)
            for index in np.argsort(-norms)[:columns]:
                yield f"{name}[:, {int(index)}]", value[:, index].reshape(image_shape)
            yield f"{name} mean column", value.mean(axis=1).reshape(image_shape)
            left, _, _ = np.linalg.svd(value, full_matrices=False)
            for index in range(min(components, left.shape[1])):
                yield f"{name} singular vector {index}", left[:, index].reshape(image_shape)


def as_patterns(candidate: np.ndarray, epsilon: float) -> dict[str, np.ndarray]:
    """The four ways a thief applies a candidate: raw, negated, +-epsilon * sign."""
    signed = epsilon * np.sign(candidate)
    return {"raw": candidate, "negated": -candidate, "sign": signed, "negated_sign": -signed}


def layout_permutations(kernel: np.ndarray, height: int, width: int,
                        blocks: int = 1) -> np.ndarray:
    """Guesses (G, H*W) of `perm` (shuffled value j came from pixel perm[j] of an H x W block)
    from a dense kernel's rows: `blocks` groups of H*W rows (block-major, the same permutation
    in each), their similarity averaged over the blocks; a spectral embedding of its
    k-nearest-neighbour graph, rotated and reflected, each assigned to the block's grid."""
    rows = kernel - kernel.mean(axis=1, keepdims=True)
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    rows = rows.reshape(blocks, height * width, -1)
    similarity = np.einsum("bif,bjf->ij", rows, rows) / blocks
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1)[:, :NEIGHBOURS]
    adjacency = np.zeros_like(similarity)
    np.put_along_axis(adjacency, nearest, 1.0, axis=1)
    adjacency = np.maximum(adjacency, adjacency.T)
    degree = adjacency.sum(axis=1)
    scale = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
    laplacian = np.eye(len(degree)) - scale[:, None] * adjacency * scale[None, :]
    _, vectors = np.linalg.eigh(laplacian)
    embedding = vectors[:, 1:3] * scale[:, None]
    grid = np.stack(np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width),
                                indexing="ij"), -1).reshape(-1, 2)
    guesses = []
    for angle in np.linspace(0, np.pi, ANGLES, endpoint=False):
        turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        for reflect in (1.0, -1.0):
            points = embedding @ turn * np.array([1.0, reflect])
            ranks = points.argsort(axis=0).argsort(axis=0) / max(len(points) - 1, 1)
            cost = ((ranks[:, None, :] - grid[None, :, :]) ** 2).sum(-1)
            shuffled, pixel = linear_sum_assignment(cost)
            guess = np.empty(len(points), np.int64)
            guess[shuffled] = pixel
            guesses.append(guess)
    return np.stack(guesses)


@functools.lru_cache(maxsize=8)
def _permuted_counter(module: nn.Module, block_size: int):
    def count(params: Any, perms: jax.Array, images: jax.Array, labels: jax.Array) -> jax.Array:
        def one(perm: jax.Array) -> jax.Array:
            logits = module.apply({"params": params}, block_shuffle(images, perm, block_size))
            return (logits.argmax(-1) == labels).sum()

        return jax.vmap(one)(perms)

    return compilation.jit(count)


def permuted_accuracies(target: Any, perms: np.ndarray, block_size: int, images: np.ndarray,
                        labels: np.ndarray, per_call: int = 8) -> np.ndarray:
    """Accuracy of the images with every block shuffled by each permutation (out[j] = in[p[j]])."""
    counter = _permuted_counter(target.module, block_size)
    correct = np.zeros(perms.shape[0], np.int64)
    for start in range(0, perms.shape[0], per_call):
        chunk = perms[start:start + per_call]
        real = chunk.shape[0]
        if real < per_call:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], per_call - real, axis=0)])
        hits = counter(target.params, jnp.asarray(chunk), jnp.asarray(images), jnp.asarray(labels))
        correct[start:start + real] = np.asarray(hits)[:real]
    return correct / images.shape[0]


def _read_layout(setting: Setting, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The permutation guessed from every dense kernel over the input, for a shuffle."""
    height, width, channels = setting.protected.image_shape
    spec, side = setting.spec, setting.spec.block_size
    if "shuffle" not in spec.kind:
        return {"skipped": "no shuffle in the transform"}
    if channels != 1:
        return {"skipped": "reads the layout of one-channel images only"}
    kernels = [(_path_name(path), np.asarray(leaf, np.float32)) for path, leaf in
               jax.tree_util.tree_flatten_with_path(setting.protected.params)[0]
               if np.ndim(leaf) == 2 and np.shape(leaf)[0] == height * width]
    if not kernels:
        return {"skipped": "no dense kernel reads the flattened input"}
    true = np.asarray(block_permutation(setting.licence.key(), side, channels))
    best: dict[str, Any] = {"accuracy": -1.0}
    pixels = np.arange(height * width, dtype=np.float32).reshape(1, height, width, 1)
    block_rows = np.asarray(to_blocks(pixels, side)).reshape(-1).astype(np.int64)  # block-major
    for name, kernel in kernels:
        guesses = layout_permutations(kernel[block_rows], side, side,
                                      (height // side) * (width // side))
        accuracies = permuted_accuracies(setting.protected, guesses, side, images, labels)
        index = int(np.argmax(accuracies))
        if accuracies[index] > best["accuracy"]:
            best = {"accuracy": float(accuracies[index]), "parameter": name,
                    "guesses": int(len(guesses)),
                    # a control that needs the key: how much of the layout the guess got right
                    "positions_right": float((guesses[index] == true).mean()),
                    "positions_right_best_guess": float((guesses == true).mean(axis=1).max())}
    return best


def run(setting: Setting, budget: Any, eval_images: int, deadline: Deadline) -> dict[str, Any]:
    """Accuracy of every candidate pattern read from the parameters; the best one is the result."""
    images, labels = eval_subset(setting, eval_images)
    target = setting.protected
    epsilon = float(setting.spec.epsilon)
    true = np.asarray(setting.true_pattern()) if "additive" in setting.spec.kind else None
    names, patterns, cosines = [], [], []
    for name, candidate in input_shaped_candidates(target.params, tuple(target.image_shape),
                                                    int(budget.columns), int(budget.components)):
        if true is not None:
            cosines.append(abs(cosine(candidate, true)))
        for how, pattern in as_patterns(candidate, epsilon).items():
            names.append((name, how))
            patterns.append(pattern.astype(np.float32))
    result: dict[str, Any] = {"candidates": len(patterns),
                              "parameters_read": sorted({name for name, _ in names}),
                              "eval_images": int(images.shape[0])}
    if not patterns:
        result.update(max_accuracy=float("nan"), layout=_read_layout(setting, images, labels),
                      note="no parameter has the input's size or reads the flattened input")
        return result
    accuracies = pattern_accuracies(target, target.params, np.stack(patterns), images, labels)
    order = np.argsort(-accuracies, kind="stable")
    best = int(order[0])
    result.update(
        max_accuracy=float(accuracies[best]),
        best={"parameter": names[best][0], "applied": names[best][1]},
        top=[{"parameter": names[i][0], "applied": names[i][1], "accuracy": float(accuracies[i])}
             for i in order[:int(budget.report_top)]],
        stopped_early=bool(deadline.expired()))
    if cosines:  # a control that needs the key: how close the closest candidate came
        result["max_abs_cosine_with_true_pattern"] = float(max(cosines))
    layout = _read_layout(setting, images, labels)
    result["layout"] = layout
    if layout.get("accuracy", -1.0) > result["max_accuracy"]:
        result["max_accuracy"] = layout["accuracy"]
        result["best"] = {"parameter": layout["parameter"], "applied": "layout permutation"}
    return result
