"""Near keys: licences one bit or one character away from the true one, and changed parameters.

* every single-bit flip of the secret, and every copyright-text edit class of
  `isnn_jax.protection.near_keys` (substitution, insertion, deletion, case, whitespace, look-alikes,
  transposition);
* the true key's own pattern with its amplitude scaled (0.5x to 2x): does the model want this
  exact pattern or anything of its shape?
* the true secret and text with other transform parameters in the licence (a new HMAC key).

The near licences the model trained on (its workdir's stored config names them) are reported
apart from the held-out ones it never saw; the held-out maximum is the headline.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from isnn_jax.attacks.measure import key_accuracies_of, pattern_accuracies
from isnn_jax.training import metadata
from isnn_jax.attacks.setting import Deadline, Setting, eval_subset
from isnn_jax.protection.licence import Licence, stack_keys
from isnn_jax.protection.near_keys import near_licences, trained_flags, trained_near_from_config
from isnn_jax.protection.transforms import additive_pattern


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


def trained_near_of(setting: Setting) -> list[Licence] | None:
    """The near licences the attacked model trained on, from its workdir (None: unknown)."""
    if not setting.protected.source:
        return None
    try:
        record = metadata.read(setting.protected.source)
    except (FileNotFoundError, ValueError, OSError):
        return None
    return trained_near_from_config(setting.licence, record.get("config", {}))


def run(setting: Setting, budget: Any, eval_images: int, deadline: Deadline) -> dict[str, Any]:
    """Every near licence screened, the best held-out and trained ones confirmed, plus the
    parameter changes."""
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
    trained_near = trained_near_of(setting)
    trained = trained_flags(keys, trained_near)
    for name, group in classes.items():
        group["trained"] = int(trained[np.array(names) == name].sum())
    # The best `confirm_top` held-out and the best `confirm_top` trained ones, each confirmed.
    top = np.concatenate([
        members[np.argsort(-screened_all[members], kind="stable")[:int(budget.confirm_top)]]
        for members in (np.flatnonzero(~trained), np.flatnonzero(trained))])
    confirmed = key_accuracies_of(setting.protected, setting.spec,
                                  stack_keys([keys[i] for i in top]), images, labels)
    for index, accuracy in zip(top, confirmed):
        group = classes[names[index]]
        group["confirmed_max"] = max(group.get("confirmed_max", 0.0), float(accuracy))
    split = {}
    for label, mask in (("held_out", ~trained), ("trained", trained)):
        chosen = [float(a) for i, a in zip(top, confirmed) if mask[i]]
        if mask.any():
            split[label] = {"count": int(mask.sum()),
                            "screen_max": float(screened_all[mask].max()),
                            "max_accuracy": max(chosen) if chosen else float("nan")}
    scales = tuple(float(s) for s in budget.amplitude_scales)
    return {
        "near_licences": int(screened_all.size),
        "stopped_early": bool(len(classes) < len(groups)),
        "screen_images": int(screen_x.shape[0]),
        "eval_images": int(images.shape[0]),
        "classes": classes,
        "confirmed_top": [{"class": names[i], "trained": bool(trained[i]), "accuracy": float(a)}
                          for i, a in sorted(zip(top, confirmed), key=lambda p: -p[1])],
        "max_accuracy": float(confirmed.max()),  # over held-out and trained alike
        "trained_known": trained_near is not None,
        **split,
        "amplitude_scaled_true_key": amplitude_scaled(setting, scales, images, labels),
        "changed_parameters": changed_parameters(setting, scales, images, labels),
    }
