"""Fine-tuning with stolen weights, against training the same architecture from scratch.

For each fraction of clean labelled training data the thief fine-tunes the stolen weights
(all layers; the last layer only; the last layer re-initialised, then all layers) and, as the
reference, trains fresh weights on the same data with the same steps. The headline is the
thief's advantage: accuracy on clean test images from stolen weights minus from scratch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from isnn_jax.attacks.fit import fit, last_layer_name, layer_mask, one_hot
from isnn_jax.attacks.measure import accuracy, key_accuracies_of
from isnn_jax.attacks.setting import Deadline, Setting, eval_subset, fresh_params, train_subset

MODES = ("all_layers", "last_layer", "last_layer_reinit")


def start_point(setting: Setting, mode: str, seed: int) -> tuple[Any, Any]:
    """Initial weights and trainable mask of one fine-tuning mode (or 'scratch')."""
    target = setting.protected
    head = last_layer_name(target.params, target.num_classes)
    if mode == "scratch":
        params = fresh_params(target, seed)
        return params, layer_mask(params, None)
    if mode == "all_layers":
        return target.params, layer_mask(target.params, None)
    if mode == "last_layer":
        return target.params, layer_mask(target.params, {head})
    if mode == "last_layer_reinit":
        params = {**target.params, head: fresh_params(target, seed)[head]}
        return params, layer_mask(params, None)
    raise ValueError(f"unknown fine-tuning mode {mode!r}; choose from {', '.join(MODES)}, scratch")


def advantage(results: dict[str, float]) -> dict[str, float]:
    """Thief's advantage of each mode (and of the best mode) over training from scratch."""
    scratch = results["scratch"]
    gains = {mode: acc - scratch for mode, acc in results.items() if mode != "scratch"}
    gains["best"] = max(gains.values()) if gains else 0.0
    return gains


def run(setting: Setting, budget: Any, eval_images: int, deadline: Deadline) -> dict[str, Any]:
    """Every (fraction, mode) pair plus the scratch reference; accuracies on clean test images."""
    images, labels = eval_subset(setting, eval_images)
    target = setting.protected
    legal_key = setting.licence.key()[None]
    rows, stopped = [], False
    for index, fraction in enumerate(budget.fractions):
        train_x, train_y = train_subset(setting, float(fraction), setting.seed + index)
        targets = one_hot(train_y, target.num_classes)
        clean, legal, steps_run = {}, {}, {}
        for mode in ("scratch", *budget.modes):
            if clean and deadline.expired():
                stopped = True
                break
            params, mask = start_point(setting, mode, setting.seed + 1000 + index)
            params, steps_run[mode] = fit(target.module, params, train_x, targets,
                                          steps=int(budget.steps), batch_size=int(budget.batch_size),
                                          learning_rate=float(budget.learning_rate),
                                          seed=setting.seed + index, mask=mask, deadline=deadline)
            clean[mode] = accuracy(target, params, images, labels)
            tuned = dataclasses.replace(target, params=params)
            legal[mode] = float(key_accuracies_of(tuned, setting.spec, legal_key, images, labels)[0])
        rows.append({"fraction": float(fraction), "train_images": int(train_x.shape[0]),
                     "steps": steps_run, "clean_accuracy": clean, "legal_accuracy": legal,
                     "advantage": advantage(clean) if "scratch" in clean and len(clean) > 1 else {}})
        if stopped:
            break
    return {"rows": rows, "stopped_early": stopped, "eval_images": int(images.shape[0]),
            "modes": list(budget.modes), "steps": int(budget.steps),
            "batch_size": int(budget.batch_size), "learning_rate": float(budget.learning_rate)}
