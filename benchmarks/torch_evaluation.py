"""The protection report of `isnn_jax.evaluation.screening`, computed on a PyTorch model.

What the PyTorch reference would run after training to state the same figures: the same
licences (the config's random licences and every near licence), the same seeded screen subset,
the same confirmation rule (the best `confirm_top` of each group measured again on the whole
split), the same rank counting (ties broken towards the lower class, as `argmax` breaks them).
The additive patterns of the licences are derived by `isnn_jax` (the reference has no key
derivation of its own); their derivation is timed as part of this evaluation.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import torch

import torch_reference as ref
from isnn_jax.evaluation.screening import rank_to_attack, screen_subset, top_indices
from isnn_jax.protection.licence import Licence, random_keys, stack_keys
from isnn_jax.protection.near_keys import near_licences, trained_flags
from isnn_jax.protection.transforms import additive_pattern

IMAGES_PER_CALL = 2048  # keys x images per forward pass


def rank_rates(model: torch.nn.Module, patterns: np.ndarray | None, images: np.ndarray,
               labels: np.ndarray) -> np.ndarray:
    """(keys, classes): the fraction of images whose true label has rank r under each pattern
    (`patterns` None: the images as given, one row)."""
    x_all = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    rows = [None] if patterns is None else list(torch.from_numpy(np.array(patterns)))
    per_call = max(IMAGES_PER_CALL // images.shape[0], 1)
    counts = []
    with torch.no_grad():
        for start in range(0, len(rows), per_call):
            chunk = rows[start:start + per_call]
            if chunk[0] is None:
                views = x_all[None]
            else:
                views = torch.clamp(x_all[None] + torch.stack(chunk)[:, None], 0.0, 1.0)
            k, n = views.shape[:2]
            logits = torch.cat([model(ref.to_torch_images(part.numpy()))
                                for part in views.reshape(k * n, *views.shape[2:])
                                .split(IMAGES_PER_CALL)]).reshape(k, n, -1)
            true = logits.gather(-1, y[None, :, None].expand(k, n, 1))
            before = torch.arange(logits.shape[-1])[None, None, :] < y[None, :, None]
            ranks = ((logits > true) | ((logits == true) & before)).sum(-1)
            counts.append(torch.nn.functional.one_hot(ranks, logits.shape[-1]).sum(1))
    return (torch.cat(counts).numpy() / images.shape[0]).astype(np.float64)


def protection_report(model: torch.nn.Module, licence: Licence, images: np.ndarray,
                      labels: np.ndarray, *, random_licences: int, seed: int, near_per_class: int,
                      screen_images: int, confirm_top: int,
                      trained_near: Sequence[Licence]) -> dict[str, Any]:
    """Legal, clean, and the screened-then-confirmed wrong-key and near-key maxima."""
    started = time.perf_counter()
    spec = licence.transform
    shape = images.shape[1:]
    groups = near_licences(licence, near_per_class or None, seed)
    near = [lic for group in groups.values() for lic in group]
    trained = trained_flags(near, trained_near)
    keys = jnp.concatenate([random_keys(seed, random_licences), stack_keys(near)])
    patterns = np.asarray(jax.jit(jax.vmap(lambda k: additive_pattern(k, shape, spec)))(keys))
    legal_pattern = np.asarray(additive_pattern(licence.key(), shape, spec))[None]
    legal = float(rank_rates(model, legal_pattern, images, labels)[0, 0])
    clean = float(rank_rates(model, None, images, labels)[0, 0])

    chosen = screen_subset(images.shape[0], screen_images, seed)
    screen = rank_rates(model, patterns, images[chosen], labels[chosen])
    random_idx = np.arange(random_licences)
    near_idx = random_licences + np.arange(len(near))
    held_idx, trained_idx = near_idx[~trained], near_idx[trained]
    best_rank = rank_to_attack(screen[random_idx].mean(axis=0), chosen.size)
    picks = [top_indices(screen[:, 0], members, confirm_top)
             for members in (random_idx, held_idx, trained_idx)]
    if best_rank:
        picks.append(top_indices(screen[:, best_rank], random_idx, confirm_top))
    confirm = np.unique(np.concatenate(picks))
    full = dict(zip(confirm.tolist(), rank_rates(model, patterns[confirm], images, labels)))

    def confirmed_max(members: np.ndarray, column: int = 0) -> float | None:
        values = [full[i][column] for i in members.tolist() if i in full]
        return float(max(values)) if values else None

    return {"legal_accuracy": legal, "clean_accuracy": clean,
            "wrong_key_max": confirmed_max(random_idx),
            "wrong_key_mean_screen": float(screen[random_idx, 0].mean()),
            "wrong_key_rank_attack": {"best_rank": best_rank,
                                      "mean_accuracy": float(screen[random_idx, best_rank].mean()),
                                      "max_accuracy": confirmed_max(random_idx, best_rank)},
            "near_key_held_out_max": confirmed_max(held_idx),
            "near_key_trained_max": confirmed_max(trained_idx),
            "licences": int(keys.shape[0]), "screen_images": int(chosen.size),
            "licences_confirmed": int(confirm.size), "confirm_images": int(images.shape[0]),
            "seconds": time.perf_counter() - started}
