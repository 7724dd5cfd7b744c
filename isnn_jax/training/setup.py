"""What a training run is made of, read from its config, and the checks made before it starts.

Every check here runs before anything is written: a bad transform, hardening value, licence or
workdir fails with a message that names the fix, and a resumed run refuses a config that would
silently change its schedule, data order or model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from isnn_jax.data import (DataError, DatasetNotFoundError, DatasetSpec, augment_options,
                           data_options, describe, load_split)
from isnn_jax.data.feeds import input_options
from isnn_jax.data.streaming import open_streams, train_share_bytes
from isnn_jax.data.streams import load_streams
from isnn_jax.protection.hardening import Hardening
from isnn_jax.protection.licence import Licence, LicenceError, TransformSpec
from isnn_jax.protection.simulated import SimulatedThieves, parse_thieves
from isnn_jax.protection.step import Protection
from isnn_jax.training import checkpoints, metadata
from isnn_jax.training.config import ConfigError, default_config
from isnn_jax.training.feeds import TrainInput, choose_pipeline

log = logging.getLogger("isnn_jax")


class WorkdirError(ValueError):
    """The workdir cannot be created or written."""


def check_workdir_writable(workdir: Path) -> None:
    """Create `workdir` if needed and prove it writable, before any output is produced."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise WorkdirError(
            f"workdir {workdir} is not usable ({err.__class__.__name__}: {err.strerror or err}); "
            "choose another --workdir or fix its permissions"
        ) from None


def transform_spec(config: ml_collections.ConfigDict) -> TransformSpec:
    """The transform parameters the config asks for."""
    lic = config.licence
    return TransformSpec(kind=lic.kind, epsilon=float(lic.epsilon), block_size=int(lic.block_size),
                         distribution=lic.distribution)


def protection_of(config: ml_collections.ConfigDict, spec: TransformSpec) -> Protection:
    """The static description of the illegal views and their weights; a bad hardening value is
    a ConfigError naming the field."""
    obj, hard = config.objective, config.hardening
    try:
        hardening = Hardening(unlock=int(hard.unlock_perturbations),
                              unlock_step=float(hard.unlock_step),
                              estimate_observed=(int(hard.estimate_min), int(hard.estimate_max)))
        sim = config.simulated
        simulated = SimulatedThieves(thieves=parse_thieves(tuple(sim.thieves)),
                                     inner_steps=int(sim.inner_steps),
                                     first_order=bool(sim.first_order))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if int(obj.wrong_key_group) < 1:
        raise ConfigError(f"objective.wrong_key_group={obj.wrong_key_group} must be at least 1 "
                          "(1: every example its own wrong keys)")
    if not 0.0 < float(obj.partial_max) < 1.0:
        raise ConfigError(f"objective.partial_max={obj.partial_max} must lie strictly between 0 "
                          "and 1 (the largest legal fraction a partial-key view carries)")
    return Protection(spec=spec, protect=bool(config.protect), wrong_views=int(obj.wrong_views),
                      illegal_every=int(obj.illegal_every),
                      wrong_key_group=int(obj.wrong_key_group),
                      partial_max=float(obj.partial_max),
                      weights={"clean": float(obj.w_clean), "wrong": float(obj.w_wrong),
                               "near": float(obj.w_near), "partial": float(obj.w_partial),
                               "unlock": float(hard.w_unlock),
                               "estimate": float(hard.w_estimate), "thief": float(sim.w_thief)},
                      illegal_form=obj.illegal_form, temperature=float(obj.temperature),
                      hardening=hardening, simulated=simulated)


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """Adam with linear warm-up and cosine decay over the whole run."""
    train = config.train
    warmup = min(int(train.warmup_steps), max(total_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(0.0, float(train.learning_rate), warmup,
                                                  max(total_steps, warmup + 1))
    return optax.adam(schedule)


def check_licence_matches(licence: Licence, spec: TransformSpec) -> None:
    """The licence file's transform must be the one the config trains for."""
    if licence.transform != spec:
        raise LicenceError(
            f"the licence's transform {licence.transform.to_dict()} differs from the config's "
            f"{spec.to_dict()}; drop the --config.licence.* overrides or issue a new licence"
        )


def dataset_of(config: ml_collections.ConfigDict) -> DatasetSpec:
    """What config.data names (its image shape after resizing, its classes), read without
    loading the images; bad data options are a ConfigError naming the fix."""
    try:
        augment_options(config.data)  # checked here too, before anything is written
        input_options(config.data)
        return describe(str(config.data.name), **data_options(config.data))
    except DatasetNotFoundError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from None


def training_data(config: ml_collections.ConfigDict,
                  batch_size: int) -> tuple[TrainInput, np.ndarray, np.ndarray]:
    """This process's train input (its streams, and the pipeline config.data.pipeline resolves
    to: logged) and the whole test split (uint8 images, int32 labels); an image the
    description did not open may still be bad: a ConfigError naming it."""
    options = data_options(config.data)
    name, is_main = str(config.data.name), jax.process_index() == 0
    inputs = input_options(config.data)
    try:
        if jax.process_count() > 1:  # one process prepares the TFDS files; the others read them
            if not is_main:
                multihost_utils.sync_global_devices("isnn_jax: data prepared")
            load_split(name, "test", **options)
            if is_main:
                multihost_utils.sync_global_devices("isnn_jax: data prepared")
        share = None
        if inputs["pipeline"] in ("auto", "streaming"):
            share = train_share_bytes(name, jax.process_count(), **options)
        pipeline, why = choose_pipeline(inputs["pipeline"], name, share)
        if is_main:
            log.info("input pipeline: %s (%s)", pipeline, why)
        load = open_streams if pipeline == "streaming" else load_streams
        streams = load(name, global_batch=batch_size, streams=int(config.data.streams),
                       seed=int(config.seed), process_index=jax.process_index(),
                       process_count=jax.process_count(), **options,
                       **augment_options(config.data))
        test_images, test_labels = load_split(name, "test", **options)
    except DataError as err:
        raise ConfigError(str(err)) from None
    return (TrainInput(pipeline, streams, inputs["workers"], inputs["prefetch"]), test_images,
            test_labels)


def metadata_record(config: ml_collections.ConfigDict, licence: Licence | None,
                    dataset: DatasetSpec | None = None) -> dict[str, Any]:
    """The workdir's metadata: what the model expects, the licence's public fingerprint only.
    `dataset` is what config.data describes (`dataset_of`, read again when not given)."""
    spec = dataset if dataset is not None else dataset_of(config)
    return {
        "dataset": config.data.name,
        "image_shape": list(spec.image_shape),
        "num_classes": spec.num_classes,
        "class_names": list(spec.class_names),
        "input_range": [0.0, 1.0],
        "protected": bool(config.protect),
        "transform": licence.transform.to_dict() if licence else None,
        "licence_fingerprint": licence.fingerprint() if licence else None,
        "model": config.model.to_dict(),
        "checkpoint_dir": config.train.checkpoint_dir,
        "config": config.to_dict(),
    }


def check_workdir_licence(workdir: Path, licence: Licence | None) -> None:
    """A workdir that holds a model trained for another licence is refused."""
    path = workdir / metadata.METADATA_FILE
    if not path.exists():
        return
    record = metadata.read(workdir)
    stored = record.get("licence_fingerprint")
    given = licence.fingerprint() if licence else None
    if stored != given:
        raise LicenceError(
            f"{workdir} holds a model trained for licence {stored}, not {given}; "
            "pass that model's licence or use a new workdir"
        )


def check_resume_config(workdir: Path, config: ml_collections.ConfigDict,
                         directory: str) -> list[dict[str, Any]]:
    """Refuse to resume the checkpoints in `directory` with a config that changes the run (its
    schedule, data order or model) unless train.allow_changed_config; returns the workdir's
    record of accepted changes, this one (if any) last without its step."""
    path = workdir / metadata.METADATA_FILE
    if not path.exists() or not checkpoints.has_checkpoint(directory):
        return []  # nothing to resume: a new run
    record = metadata.read(workdir)
    history = list(record.get("config_changes", []))
    if "config" not in record:
        return history
    changes = metadata.config_changes(record["config"], config.to_dict(),
                                      default_config().to_dict())
    if not changes:
        return history
    listed = metadata.describe_changes(changes)
    if not config.train.allow_changed_config:
        raise ConfigError(
            f"{workdir} holds checkpoints of a run with another config: {listed}. Resuming would "
            "silently change its learning-rate schedule, data order or model. Use a new "
            "--workdir, or restore those values, or pass --config.train.allow_changed_config=True "
            "if the change is intended")
    log.warning("resuming with a changed config, as train.allow_changed_config allows: %s", listed)
    return history + [{"fields": {name: list(pair) for name, pair in changes.items()}}]
