"""Protect a model for one buyer: train for the buyer's registered licence, record the model.

The licence comes from the seller's registry (it never needs to exist as a file on the training
machine); the transform fields of the config are taken from the licence. After training, the
model fingerprint (SHA-256 of the parameters) is recorded in the registry next to the licence.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from isnn_jax.protection.licence import Licence, LicenceError
from isnn_jax.runtime.fingerprint import model_fingerprint
from isnn_jax.runtime.model import load_protected
from isnn_jax.seller.registry import Entry, open_registry
from isnn_jax.seller.transplant import check_transplant, registry_licence_of, transplant
from isnn_jax.training.config import ConfigError
from isnn_jax.training.loop import train_and_evaluate

log = logging.getLogger("isnn_jax")


def configure_for_licence(config: ml_collections.ConfigDict, licence: Licence) -> None:
    """Set the config's transform fields from the licence (in place) and turn protection on."""
    spec = licence.transform
    config.protect = True
    config.licence.kind = spec.kind
    config.licence.epsilon = float(spec.epsilon)
    config.licence.block_size = int(spec.block_size)
    config.licence.distribution = spec.distribution
    config.licence.copyright = licence.copyright


def record_model(registry_dir: str | Path, buyer: str, workdir: str | Path) -> Entry:
    """Record the newest checkpoint of `workdir` as the buyer's model; returns the updated record."""
    with open_registry(registry_dir) as registry:
        registry.licence(buyer)  # a revoked licence raises here
        model = load_protected(workdir)
        trained_for = model.meta.get("licence_fingerprint")
        if trained_for is None:
            raise LicenceError(f"{workdir} holds an unprotected model; protect one for {buyer!r} "
                               "with python -m isnn_jax.protect")
        return registry.record_model(buyer, model_fingerprint(model.params),
                                     str(Path(workdir).absolute()), model.step,
                                     licence_id=trained_for)


def transplanted_start(registry_dir: str | Path, base_dir: str | Path,
                       licence: Licence) -> tuple[Any, float]:
    """The buyer's first parameters made from the protected base in `base_dir` by the key
    transplant (seller/transplant.py), and their measured deviation from the base."""
    base = load_protected(base_dir)
    with open_registry(registry_dir) as registry:
        base_licence = registry_licence_of(list(registry.licences()),
                                           base.meta.get("licence_fingerprint"))
    params = transplant(base, base_licence, licence)
    new = dataclasses.replace(base, params=params,
                              meta={**base.meta, "licence_fingerprint": licence.fingerprint()})
    images = np.random.default_rng(0).random((64, *base.image_shape), dtype=np.float32)
    return params, check_transplant(base, base_licence, new, licence, images)


def protect_for_buyer(registry_dir: str | Path, buyer: str, config: ml_collections.ConfigDict,
                      workdir: str | Path, *, base: str | None = None,
                      transplant_base: bool = False) -> dict[str, Any]:
    """Train (or resume) `workdir` for the buyer's licence and record the model in the registry.

    `base` starts from that trained model (config.init_from). With `transplant_base`, it must
    be protected for another registered licence and its first layer is rewritten for this
    buyer's key (no training needed: config.train.epochs may be 0).
    """
    if base:
        if config.init_from and config.init_from != base:
            raise ConfigError(f"--base {base} and --config.init_from={config.init_from} "
                              "disagree; pass one of them")
        config.init_from = base
    if transplant_base and not config.init_from:
        raise ConfigError("--transplant needs --base WORKDIR (the protected model to rewrite)")
    with open_registry(registry_dir) as registry:
        licence = registry.licence(buyer)
    configure_for_licence(config, licence)
    initial = None
    if transplant_base:
        initial, error = transplanted_start(registry_dir, config.init_from, licence)
        log.info("transplanted %s to licence %s (largest logit difference %.1e)",
                 config.init_from, licence.fingerprint(), error)
    report = train_and_evaluate(config, workdir, licence, initial_params=initial)
    if report.get("stopped_early"):
        return report
    entry = record_model(registry_dir, buyer, workdir)
    here = str(Path(workdir).absolute())
    report["model_fingerprint"] = [m for m in entry.models if m["workdir"] == here][-1][
        "model_fingerprint"]
    return report
