"""Near keys: licences one bit or one character away from the true one, and changed parameters.

* every single-bit flip of the secret, and every copyright-text edit class of
  `isnn_jax.near_keys` (substitution, insertion, deletion, case, whitespace, look-alikes,
  transposition);
* the true key's own pattern with its amplitude scaled (0.5x to 2x): does the model want this
  exact pattern or anything of its shape?
* the true secret and text with other transform parameters in the licence (a new HMAC key).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from isnn_jax.attack.measure import key_accuracies_of, pattern_accuracies
from isnn_jax.attack.setting import Deadline, Setting, eval_subset
from isnn_jax.licence import stack_keys
from isnn_jax.near_keys import near_licences
from isnn_jax.transforms import additive_pattern


def amplitude_scaled(setting: Setting, scales: tuple[float, ...], images: np.ndarray,
                     labels: np.ndarray) -> list[dict[str, float]]:
    """Accuracy under the true key's pattern with epsilon multiplied by each scale."""
    if setting.spec.kind != "additive":
        return []
    patterns = np.stack([
        np.asarray(additive_pattern(setting.licence.key(), setting.protected.image_shape,
                                    dataclasses.replace(setting.spec,
                                                        epsilon=float(scale) * setting.spec.epsilon)))
        for scale in scales])
    accuracies = pattern_accuracies(setting.protected, setting.protected.params, patterns, images,
                                    labels)
    return [{"scale": float(s), "epsilon": float(s) * setting.spec.epsilon, "accuracy": float(a)}
            for s, a in zip(scales, accuracies)]


def changed_parameters(setting: Setting, scales: tuple[float, ...], images: np.ndarray,
                       labels: np.ndarray) -> list[dict[str, Any]]:
    """True secret and text, other transform parameters written in the licence (new HMAC key)."""
    spec = setting.spec
    variants = [dataclasses.replace(spec, epsilon=float(s) * spec.epsilon) for s in scales
                if 0.0 < float(s) * spec.epsilon <= 0.5]
    other = "uniform" if spec.distribution == "rademacher" else "rademacher"
    variants.append(dataclasses.replace(spec, distribution=other))
    rows = []
    for variant in variants:
        licence = dataclasses.replace(setting.licence, transform=variant)
        accuracy = key_accuracies_of(setting.protected, variant, licence.key()[None], images,
                                     labels)[0]
        rows.append({"epsilon": variant.epsilon, "distribution": variant.distribution,
                     "accuracy": float(accuracy)})
    return rows


def run(setting: Setting, budget: Any, eval_images: int, deadline: Deadline) -> dict[str, Any]:
    """Every near licence screened, the best confirmed, plus the parameter changes."""
    images, labels = eval_subset(setting, eval_images)
    screen_x, screen_y = images[:budget.screen_images], labels[:budget.screen_images]
    groups = near_licences(setting.licence, int(budget.per_class) or None, setting.seed)
    classes: dict[str, Any] = {}
    keys, names = [], []
    for name, group in groups.items():
        if classes and deadline.expired():
            break
        group_keys = stack_keys(group)
        screened = key_accuracies_of(setting.protected, setting.spec, group_keys, screen_x, screen_y)
        classes[name] = {"count": len(group), "screen_mean": float(screened.mean()),
                         "screen_max": float(screened.max())}
        keys.extend(group)
        names.extend([name] * len(group))
        classes[name]["_screened"] = screened
    screened_all = np.concatenate([c.pop("_screened") for c in classes.values()])
    top = np.argsort(-screened_all, kind="stable")[:int(budget.confirm_top)]
    confirmed = key_accuracies_of(setting.protected, setting.spec,
                                  stack_keys([keys[i] for i in top]), images, labels)
    for index, accuracy in zip(top, confirmed):
        group = classes[names[index]]
        group["confirmed_max"] = max(group.get("confirmed_max", 0.0), float(accuracy))
    scales = tuple(float(s) for s in budget.amplitude_scales)
    return {
        "near_licences": int(screened_all.size),
        "stopped_early": bool(len(classes) < len(groups)),
        "screen_images": int(screen_x.shape[0]),
        "eval_images": int(images.shape[0]),
        "classes": classes,
        "confirmed_top": [{"class": names[i], "accuracy": float(a)}
                          for i, a in sorted(zip(top, confirmed), key=lambda p: -p[1])],
        "max_accuracy": float(confirmed.max()),
        "amplitude_scaled_true_key": amplitude_scaled(setting, scales, images, labels),
        "changed_parameters": changed_parameters(setting, scales, images, labels),
    }
