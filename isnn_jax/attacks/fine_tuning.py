"""Fine-tuning stolen weights against training the same architecture from scratch: the thief's
advantage, with the sweep, re-initialisations and model selection a careful thief would use.

For each fraction of the clean labelled training split and each of `seeds` draws of it, the
thief holds out a validation share of its own images and, from every start point (the stolen
weights with all layers or only the head trainable; the head re-initialised, then all layers
or only the head; the first layer and every input-shaped parameter re-initialised, then all
layers; the stolen weights with every hidden unit re-centred on the thief's images, then all
layers (`attacks.revive`: against a layer switched off on clean inputs); and all layers
re-initialised, which is training from scratch), trains with every
(optimiser, learning rate) of the sweep, keeping the weights with the best validation accuracy.
Each start point's choice is then measured once on the test split. The thief's advantage is
the best start point's test accuracy minus the from-scratch reference's (both chosen on
validation, never on the test split); the reference's learning curve is reported, with whether
it stopped improving before the step budget ran out.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import numpy as np

from isnn_jax.attacks.fit import fit_selected, head_path, layer_mask, one_hot
from isnn_jax.attacks.measure import accuracy, key_accuracies_of
from isnn_jax.attacks.parameters import input_sized, reads_input
from isnn_jax.attacks.revive import revived
from isnn_jax.attacks.setting import Deadline, Setting, eval_subset, fresh_params, thief_data

log = logging.getLogger("isnn_jax.attacks")

MODES = ("all_layers", "last_layer", "last_layer_reinit", "last_layer_reinit_only",
         "first_layer_reinit", "revived")
CONVERGED_GAIN = 0.01  # the reference has converged when its last quarter gains at most this


def _input_layers(params: Any, image_shape: tuple[int, int, int]) -> set[tuple]:
    """Paths of the modules whose kernel reads the input, and of every parameter of two or more
    dimensions with as many values as an image (the places a key can sit; the rules of the
    zero-data attack, isnn_jax.attacks.parameters)."""
    marked = set()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = tuple(getattr(p, "key", p) for p in path)
        shape = tuple(leaf.shape)
        if keys[-1] == "kernel" and reads_input(shape, image_shape):
            marked.add(keys[:-1])
        elif len(shape) >= 2 and input_sized(shape, image_shape):
            marked.add(keys)
    return marked


def _reinitialised(params: Any, fresh: Any, prefixes: set[tuple]) -> Any:
    """`params` with every leaf under one of `prefixes` taken from `fresh`."""
    def pick(path: tuple, leaf: Any, new: Any) -> Any:
        keys = tuple(getattr(p, "key", p) for p in path)
        return new if any(keys[:len(prefix)] == prefix for prefix in prefixes) else leaf

    return jax.tree_util.tree_map_with_path(pick, params, fresh)


def start_point(setting: Setting, mode: str, seed: int,
                images: np.ndarray | None = None) -> tuple[Any, Any]:
    """Initial weights and trainable mask of one start point (a mode of MODES, or 'scratch');
    `images`: the thief's training images, which 'revived' re-centres the hidden units on."""
    target = setting.protected
    head = head_path(target.params, target.num_classes)
    if mode == "scratch":
        params = fresh_params(target, seed)
        return params, layer_mask(params, None)
    if mode == "all_layers":
        return target.params, layer_mask(target.params, None)
    if mode == "last_layer":
        return target.params, layer_mask(target.params, {head})
    if mode in ("last_layer_reinit", "last_layer_reinit_only"):
        params = _reinitialised(target.params, fresh_params(target, seed), {head})
        return params, layer_mask(params, {head} if mode.endswith("only") else None)
    if mode == "first_layer_reinit":
        prefixes = _input_layers(target.params, target.image_shape)
        params = _reinitialised(target.params, fresh_params(target, seed), prefixes)
        return params, layer_mask(params, None)
    if mode == "revived":
        if images is None:
            raise ValueError("the 'revived' start point needs the thief's training images")
        params = revived(target.module, target.params, images, head)
        return params, layer_mask(params, None)
    raise ValueError(f"unknown fine-tuning mode {mode!r}; choose from {', '.join(MODES)}, scratch")


def sweep_of(budget: Any) -> list[tuple[str, float]]:
    """The (optimiser, learning rate) pairs of `budget.sweep` ("adam:1e-3", ...)."""
    pairs = []
    for entry in budget.sweep:
        name, _, rate = str(entry).partition(":")
        pairs.append((name, float(rate)))
    return pairs


def _converged(curve: list[tuple[int, float]]) -> bool:
    last = curve[-1][0]
    before = max(acc for step, acc in curve if step <= 0.75 * last)
    return max(acc for _, acc in curve) - before <= CONVERGED_GAIN


def _start_point_runs(setting: Setting, mode: str, data: tuple, budget: Any, seed: int,
                      deadline: Deadline) -> dict[str, Any]:
    """Every sweep entry from one start point; the validation-selected one."""
    target = setting.protected
    train_x, train_y, val_x, val_y = data
    targets = one_hot(train_y, target.num_classes)
    runs, best = {}, None
    for optimiser, rate in sweep_of(budget):
        if runs and deadline.expired():
            break
        params, mask = start_point(setting, mode, seed, train_x)
        chosen, record = fit_selected(
            target.module, params, train_x, targets,
            lambda p: accuracy(target, p, val_x, val_y), steps=int(budget.steps),
            batch_size=int(budget.batch_size), learning_rate=rate, optimizer_name=optimiser,
            seed=seed, evaluate_every=int(budget.evaluate_every), mask=mask, deadline=deadline)
        name = f"{optimiser}:{rate:g}"
        runs[name] = record
        if best is None or record["best_validation"] > runs[best[0]]["best_validation"]:
            best = (name, chosen)
    return {"runs": runs, "selected": best[0], "params": best[1]}


def _one_draw(setting: Setting, fraction: float, seed: int, budget: Any,
              images: np.ndarray, labels: np.ndarray, deadline: Deadline) -> dict[str, Any]:
    data = thief_data(setting, fraction, seed, float(budget.validation))
    legal_key = setting.licence.key()[None]
    modes, stopped = {}, False
    for mode in ("scratch", *budget.modes):
        if modes and deadline.expired():
            stopped = True
            break
        done = _start_point_runs(setting, mode, data, budget, seed + 1000, deadline)
        tuned = dataclasses.replace(setting.protected, params=done.pop("params"))
        selected = done["runs"][done["selected"]]
        modes[mode] = {
            "selected": done["selected"], "validation": selected["best_validation"],
            "best_step": selected["best_step"],
            "test_accuracy": accuracy(tuned, tuned.params, images, labels),
            "legal_accuracy": float(key_accuracies_of(tuned, setting.spec, legal_key, images,
                                                      labels)[0]),
            "runs": {name: {k: run[k] for k in ("best_validation", "best_step", "steps")}
                     for name, run in done["runs"].items()}}
        log.info("fine_tuning %.0f%% data, seed %d: %s -> %.2f%% (%s, step %d)", 100 * fraction,
                 seed, mode, 100 * modes[mode]["test_accuracy"], done["selected"],
                 selected["best_step"])
        if mode == "scratch":
            modes[mode]["curve"] = selected["curve"]
            modes[mode]["converged"] = _converged(selected["curve"])
    row = {"seed": seed, "train_images": int(data[0].shape[0]),
           "validation_images": int(data[2].shape[0]), "modes": modes, "stopped_early": stopped}
    stolen = {m: r for m, r in modes.items() if m != "scratch"}
    if "scratch" in modes and stolen:
        scratch = modes["scratch"]["test_accuracy"]
        chosen = max(stolen, key=lambda m: stolen[m]["validation"])
        row["advantage_by_mode"] = {m: r["test_accuracy"] - scratch for m, r in stolen.items()}
        row["advantage"] = max(row["advantage_by_mode"].values())
        row["validation_choice"] = {"mode": chosen,
                                    "advantage": stolen[chosen]["test_accuracy"] - scratch}
    return row


def _spread(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "min": float(array.min()),
            "max": float(array.max())}


def run(setting: Setting, budget: Any, eval_images: int, deadline: Deadline) -> dict[str, Any]:
    """Every fraction x seed draw; per draw every start point of the sweep; the advantages."""
    images, labels = eval_subset(setting, eval_images)
    rows, stopped = [], False
    for index, fraction in enumerate(budget.fractions):
        draws = []
        for draw in range(int(budget.seeds)):
            if draws and deadline.expired():
                stopped = True
                break
            seed = setting.seed + 100 * index + draw
            draws.append(_one_draw(setting, float(fraction), seed, budget, images, labels,
                                   deadline))
            stopped = stopped or draws[-1]["stopped_early"]
        scored = [d for d in draws if "advantage" in d]
        row = {"fraction": float(fraction), "draws": draws}
        if scored:
            row["advantage"] = _spread([d["advantage"] for d in scored])
            row["scratch_accuracy"] = _spread([d["modes"]["scratch"]["test_accuracy"]
                                               for d in scored])
            row["scratch_converged"] = all(d["modes"]["scratch"]["converged"] for d in scored)
            row["advantage_by_mode"] = {
                mode: _spread([d["advantage_by_mode"][mode] for d in scored
                               if mode in d["advantage_by_mode"]])
                for mode in budget.modes if any(mode in d["advantage_by_mode"] for d in scored)}
        rows.append(row)
        if stopped:
            break
    return {"rows": rows, "stopped_early": stopped, "eval_images": int(images.shape[0]),
            "modes": list(budget.modes), "sweep": [f"{o}:{r:g}" for o, r in sweep_of(budget)],
            "steps": int(budget.steps), "evaluate_every": int(budget.evaluate_every),
            "batch_size": int(budget.batch_size), "validation": float(budget.validation),
            "seeds": int(budget.seeds)}
