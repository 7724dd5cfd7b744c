"""The training loop: train (resuming from the newest checkpoint), then evaluate on the test split.

The loop owns the order of things: checks before anything is written, the metadata, the
jitted step over the device mesh, metrics, checkpoints every few steps and on a preemption
signal, and the final evaluation report (WORKDIR/final_evaluation.json).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from isnn_jax.base.errors import OperationError
from isnn_jax.base.files import write_json
from isnn_jax.data import to_float
from isnn_jax.data.streams import stream_count
from isnn_jax.evaluation.counting import plain_accuracy
from isnn_jax.evaluation.screening import evaluate_protection
from isnn_jax.models import build_model
from isnn_jax.protection.licence import Licence, LicenceError, stack_keys
from isnn_jax.protection.near_keys import training_near_licences
from isnn_jax.protection.step import init_state, make_train_step
from isnn_jax.training import checkpoints, metadata
from isnn_jax.training.config import ConfigError, check_config
from isnn_jax.training.distributed import check_processes_agree, initialize_distributed
from isnn_jax.training.init_from import check_base, starting_params
from isnn_jax.training.metric_writers import MetricWriter
from isnn_jax.training.parallel import DataParallel, check_batch_size, host_copy, make_mesh, replicated
from isnn_jax.training.preemption import PreemptionWatch, TrainingPreempted
from isnn_jax.training.setup import (check_licence_matches, check_resume_config,
                                     check_workdir_licence, check_workdir_writable, dataset_of,
                                     make_optimizer, metadata_record, protection_of,
                                     training_data, transform_spec)

log = logging.getLogger("isnn_jax")


class NonFiniteLossError(OperationError):
    """Training produced a NaN or Inf loss."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path,
                       licence: Licence | None = None,
                       initial_params: Any = None,
                       before_writing: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train (resuming from the newest checkpoint in `workdir`), then evaluate on the test split.

    A new run starts from `initial_params` if given (a transplanted base), else from
    config.init_from's parameters if set, else from fresh ones. Returns the evaluation report
    (also written to WORKDIR/final_evaluation.json). `before_writing` runs once every check
    has passed and the data is read, just before the first file is written (the door saves a
    newly issued licence there, so a run that cannot start leaves no file behind).
    """
    check_config(config)
    initialize_distributed(config)
    workdir = Path(workdir)
    spec = transform_spec(config)
    if config.protect:
        if licence is None:
            raise LicenceError("config.protect is True but no licence was given; pass --licence "
                               "FILE or --issue_licence NEW_FILE")
        check_licence_matches(licence, spec)
    else:
        licence = None
    dataset = dataset_of(config)  # a bad dataset fails before anything is written
    is_main = jax.process_index() == 0
    check_processes_agree(config, licence)
    batch_size = int(config.train.batch_size)
    mesh = make_mesh()
    check_batch_size(batch_size, mesh, int(config.objective.illegal_every))  # before any write
    protection = protection_of(config, spec)
    try:
        protection.hardening.check_batch(batch_size)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    stream_count(int(config.data.streams), batch_size, jax.process_count())
    image_shape, num_classes = tuple(dataset.image_shape), dataset.num_classes
    model = model_of(config, image_shape, num_classes)
    if config.init_from:  # a missing or wrongly protected base fails before any output
        check_base(str(config.init_from), licence, transplanted=initial_params is not None)
    check_workdir_licence(workdir, licence)
    ckpt_dir = checkpoints.checkpoint_dir(workdir, config.train.checkpoint_dir)
    config_changes = check_resume_config(workdir, config, ckpt_dir)
    train_input, test_images, test_labels = training_data(config, batch_size)  # bad files fail
    if before_writing is not None:
        before_writing()
    check_workdir_writable(workdir)
    per_epoch = train_input.steps_per_epoch
    total_steps = int(config.train.epochs) * per_epoch
    tx = make_optimizer(config, total_steps)
    root = jax.random.key(int(config.seed), impl="threefry2x32")
    init_rng, step_root = jax.random.split(root)

    repl = replicated(mesh)
    base = None
    if not checkpoints.has_checkpoint(ckpt_dir):  # a resume ignores the base
        base = starting_params(config, model, image_shape, num_classes, init_rng, initial_params,
                               announce=is_main)
    state = jax.jit(lambda rng, params: init_state(model, tx, rng, image_shape, protection,
                                                   params),
                    out_shardings=repl)(init_rng, base)
    mngr = checkpoints.manager(ckpt_dir, int(config.train.keep_checkpoints))
    try:
        restored = checkpoints.restore_latest_state(mngr, state)
    except checkpoints.CheckpointError:
        mngr.close()
        raise
    if restored is not None:
        state = restored
        if is_main:
            log.info("resumed from checkpoint at step %d", int(host_copy(state.step)))
    resumed_at = int(host_copy(state.step))
    if config_changes and "at_step" not in config_changes[-1]:
        config_changes[-1] = {"at_step": resumed_at, **config_changes[-1]}
    if is_main:
        metadata.write(workdir, {**metadata_record(config, licence, dataset),
                                 "config_changes": config_changes})

    keys: dict[str, jax.Array] = {}
    if licence is not None:
        near = training_near_licences(licence, int(config.objective.near_keys), int(config.seed))
        keys = {"licence": licence.key(), "near": stack_keys(near) if near else None}
        keys = {name: value for name, value in keys.items() if value is not None}
    runner = DataParallel(str(config.parallelism), mesh,
                          lambda axis: make_train_step(model, tx, protection, axis_name=axis))
    keys, step_root = runner.broadcast((keys, step_root))
    step = int(host_copy(state.step))
    state = runner.place(state)

    writer = MetricWriter(workdir, enabled=is_main, resume_step=resumed_at)
    log_every = max(1, int(config.train.log_every_steps))
    ckpt_every = max(1, int(config.train.checkpoint_every_steps))
    if is_main and step >= total_steps:
        log.info("%s is already trained (step %d of %d); nothing to train, evaluating it again",
                 workdir, step, total_steps)
    elif is_main:
        log.info("training %s on %s: %d steps (%d epochs x %d), global batch %d on %d device%s",
                 "protected model" if licence else "unprotected baseline", config.data.name,
                 total_steps, int(config.train.epochs), per_epoch, batch_size, mesh.devices.size,
                 "" if mesh.devices.size == 1 else "s")
    stop_at = int(config.train.stop_after_steps) or total_steps
    pending: tuple[int, dict] | None = None
    last_time, last_step = time.perf_counter(), step
    watch = PreemptionWatch()
    feed = None
    try:
        feed = train_input.open(runner, step, min(total_steps, stop_at))
        with watch:
            while step < min(total_steps, stop_at) and not watch.requested(step):
                state, metrics = runner.step(state, feed.batch(step), step_root, keys)
                step += 1
                if pending is not None:  # check the previous step while this one runs
                    _check_finite(*pending)
                pending = (step, metrics)
                if step % log_every == 0 or step == total_steps:
                    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    _check_finite(step, metrics)
                    now = time.perf_counter()
                    rate = (step - last_step) / max(now - last_time, 1e-9)
                    last_time, last_step = now, step
                    writer.write_scalars(step, values)
                    if is_main:
                        log.info(format_progress(step, total_steps, values, rate, per_epoch))
                if step % ckpt_every == 0 and step < total_steps:
                    _check_finite(*pending)  # never checkpoint a non-finite state
                    _save_finite(mngr, runner.canonical(state), step)
            if pending is not None:
                _check_finite(*pending)
            if mngr.latest_step() != step:
                _save_finite(mngr, runner.canonical(state), step, force=True)
            mngr.wait_until_finished()
        if watch.signal_name is not None:
            raise TrainingPreempted(step, watch.signal_name)
        if step < total_steps:
            if is_main:
                log.info("stopped at step %d of %d as asked; rerun to resume", step, total_steps)
            return {"step": step, "stopped_early": True}
    finally:
        if feed is not None:
            feed.close()
        mngr.close()
        writer.flush()

    params = host_copy(runner.canonical(state).params)
    report = final_evaluation(config, model, params, licence, test_images, test_labels,
                              trained_near=near if licence is not None else None,
                              announce=is_main)
    report["step"] = step
    summary = {k: v for k, v in report.items() if isinstance(v, (int, float))}
    writer.write_scalars(step, {f"test/{k}": v for k, v in summary.items()})
    writer.close()
    if is_main:
        write_json(workdir / "final_evaluation.json", report)
    return report


def model_of(config: ml_collections.ConfigDict, image_shape: tuple[int, ...],
             num_classes: int) -> Any:
    """The config's model, checked before anything is written: it builds, and its output has
    one logit per class for images of the data's shape."""
    try:
        model = build_model(config.model.to_dict(), num_classes)
        dummy = jnp.zeros((1, *image_shape), jnp.float32)
        shapes = jax.eval_shape(lambda rng: model.apply(model.init(rng, dummy), dummy),
                                jax.random.key(0))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    except Exception as err:  # noqa: BLE001: a user's module failing on the data's images
        raise ConfigError(f"the model config.model.name={config.model.name!r} fails on images "
                          f"of shape {tuple(image_shape)}: {type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}") from None
    if tuple(shapes.shape) != (1, num_classes):
        raise ConfigError(f"the model config.model.name={config.model.name!r} outputs shape "
                          f"{tuple(shapes.shape)} for one image; it must output (1, {num_classes})"
                          f": one logit per class (its factory may take num_classes)")
    return model


def final_evaluation(config: ml_collections.ConfigDict, model: Any, params: Any,
                     licence: Licence | None, test_images: np.ndarray, test_labels: np.ndarray, *,
                     trained_near: list[Licence] | None, announce: bool) -> dict[str, Any]:
    """The test-split report of a trained model as config.eval asks for it (the plain accuracy
    of an unprotected baseline)."""
    images = to_float(test_images)
    labels = test_labels.astype(np.int32)
    if announce:
        log.info("evaluating on %d test images ...", images.shape[0])
    if licence is not None:
        report = evaluate_protection(model, params, licence, images, labels,
                                     random_licences=int(config.eval.random_licences),
                                     seed=int(config.eval.seed),
                                     near_per_class=int(config.eval.near_per_class),
                                     batch_size=int(config.eval.batch_size),
                                     screen_images=int(config.eval.screen_images),
                                     confirm_top=int(config.eval.confirm_top),
                                     exhaustive=bool(config.eval.exhaustive),
                                     trained_near=trained_near)
    else:
        report = {"num_images": int(images.shape[0]),
                  "clean_accuracy": plain_accuracy(model, params, images, labels,
                                                   int(config.eval.batch_size))}
    return report


def format_progress(step: int, total: int, metrics: dict[str, float], rate: float,
                     per_epoch: int) -> str:
    """One progress line: step, epoch, loss, the accuracies the step measured, rate and ETA."""
    parts = [f"step {step}/{total} (epoch {step / per_epoch:.2f})", f"loss {metrics['loss']:.4f}"]
    for name in ("legal", "clean", "wrong", "near", "thief"):
        if f"{name}_accuracy" in metrics:
            parts.append(f"{name} {metrics[f'{name}_accuracy']:.3f}")
    if "accuracy" in metrics:
        parts.append(f"acc {metrics['accuracy']:.3f}")
    eta = (total - step) / rate if rate > 0 else float("nan")
    parts.append(f"{rate:.1f} steps/s, ETA {eta:.0f}s")
    return " | ".join(parts)



_NON_FINITE_HINT = ("the last good checkpoint is kept. Likely causes: a learning rate too high "
                    "(lower --config.train.learning_rate) or images outside [0, 1]")


def _check_finite(step: int, metrics: dict) -> None:
    loss = float(jax.device_get(metrics["loss"]))
    if not math.isfinite(loss):
        raise NonFiniteLossError(f"loss became {loss} at step {step}; {_NON_FINITE_HINT}")


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    return jnp.stack([jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(tree)]).all()


def _save_finite(mngr: Any, state: Any, step: int, *, force: bool = False) -> None:
    """Checkpoint `state` unless its parameters hold NaN or Inf (then stop with a clear error)."""
    if not bool(np.asarray(_all_finite(state.params).addressable_data(0))):
        raise NonFiniteLossError(f"parameters became NaN or Inf at step {step}; {_NON_FINITE_HINT}")
    checkpoints.save(mngr, state, force=force)
