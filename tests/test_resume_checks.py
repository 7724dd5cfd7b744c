"""Resume checks: restore failures that are not damage change nothing, a changed config is
refused unless intended, metrics hold each step once, a licence stays outside the workdir."""

import json
import logging
import os
import shutil
from pathlib import Path

import orbax.checkpoint as ocp
import pytest

from isnn_jax.training import checkpoints, metadata
from isnn_jax.training.checkpoints import (CheckpointError, CheckpointMismatchError,
                                  CheckpointUnavailableError, failure_kind)
from isnn_jax.training.config import ConfigError
from isnn_jax.protection.licence import LicenceError, check_licence_outside
from isnn_jax.training.loop import train_and_evaluate
from tiny_config import RESUME_LICENCE, short_config


@pytest.fixture(scope="module")
def stopped_at_30(tmp_path_factory, data_dir) -> Path:
    """A run stopped at step 30: checkpoints at 15 and 30, metrics of steps 10, 20, 30."""
    workdir = tmp_path_factory.mktemp("stopped") / "w"
    report = train_and_evaluate(short_config(data_dir, stop_after_steps=30), workdir,
                                RESUME_LICENCE)
    assert report == {"step": 30, "stopped_early": True}
    return workdir


@pytest.fixture
def workdir(stopped_at_30, tmp_path) -> Path:
    """A private copy of the stopped run."""
    copy = tmp_path / "w"
    shutil.copytree(stopped_at_30, copy)
    return copy


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_transient_os_error_during_restore_changes_nothing_and_is_named(
        workdir, data_dir, monkeypatch):
    before = snapshot(workdir / "checkpoints")
    original, calls = ocp.CheckpointManager.restore, []

    def flaky(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise OSError(5, "Input/output error (simulated storage hiccup)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", flaky)
    with pytest.raises(CheckpointUnavailableError,
                       match=r"checkpoint at step 30 .*OSError: \[Errno 5\].*not a failed "
                             r"integrity check, so nothing was changed on disk.*rerun"):
        train_and_evaluate(short_config(data_dir, stop_after_steps=30), workdir, RESUME_LICENCE)
    assert len(calls) == 1  # the older checkpoint was not tried in its place
    assert snapshot(workdir / "checkpoints") == before
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["15", "30"]
    # The storage recovers: the rerun resumes from the newest checkpoint (eval.* may change).
    config = short_config(data_dir, stop_after_steps=30)
    config.eval.seed = 99
    assert train_and_evaluate(config, workdir, RESUME_LICENCE) == {"step": 30,
                                                                    "stopped_early": True}
    assert len(calls) == 2


@pytest.mark.slow
def test_checkpoint_of_another_model_is_a_named_error_not_corruption(workdir, data_dir):
    config = short_config(data_dir, stop_after_steps=30, allow_changed_config=True)
    config.model.hidden = 32  # past the config check (opted in), the restore itself must refuse
    with pytest.raises(CheckpointMismatchError, match=r"step 30 .*does not fit the state this "
                                                      r"config builds.*nothing was changed"):
        train_and_evaluate(config, workdir, RESUME_LICENCE)
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["15", "30"]


def truncate_params(step_dir: Path) -> None:
    """Cut every data file of a checkpoint's parameters to half its size."""
    files = [p for p in (step_dir / "params").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for path in files:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.slow
def test_truncated_checkpoint_is_still_set_aside(workdir, data_dir, caplog):
    truncate_params(workdir / "checkpoints" / "30")
    with caplog.at_level(logging.WARNING, logger="isnn_jax"):
        report = train_and_evaluate(short_config(data_dir, stop_after_steps=30), workdir,
                                    RESUME_LICENCE)
    assert report["step"] == 30  # resumed from 15 and trained again to 30
    assert "checkpoint at step 30" in caplog.text and "OUT_OF_RANGE" in caplog.text
    assert "resuming from step 15" in caplog.text
    names = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    assert names == ["15", "30", "30.corrupt"]


def test_restore_failures_are_classified(tmp_path):
    assert failure_kind(CheckpointError("the params do not match their recorded digest")) == \
        "damaged"
    assert failure_kind(ValueError('DATA_LOSS: Error decoding manifest')) == "damaged"
    assert failure_kind(FileNotFoundError(2, "No such file")) == "damaged"
    assert failure_kind(json.JSONDecodeError("Expecting value", "{", 1)) == "damaged"
    assert failure_kind(ValueError("UNAVAILABLE: connection reset by peer")) == "unavailable"
    assert failure_kind(OSError(5, "Input/output error")) == "unavailable"
    assert failure_kind(PermissionError(13, "Permission denied")) == "unavailable"
    assert failure_kind(RuntimeError("something unforeseen")) == "unavailable"
    assert failure_kind(ValueError("Requested shape: (32,) is not compatible with the stored "
                                   "shape: (64,)")) == "mismatch"
    assert not checkpoints.has_checkpoint(str(tmp_path / "none"))
    (tmp_path / "c" / "30.corrupt").mkdir(parents=True)
    assert not checkpoints.has_checkpoint(str(tmp_path / "c"))


@pytest.mark.slow
def test_changed_batch_size_is_refused_naming_the_field_unless_intended(workdir, data_dir):
    record = (workdir / metadata.METADATA_FILE).read_text()
    config = short_config(data_dir, stop_after_steps=30, batch_size=32)
    config.train.learning_rate = 1e-3
    config.eval.batch_size = 7  # evaluation fields may change
    config.train.log_every_steps = 5  # and so may logging
    with pytest.raises(ConfigError, match=r"train\.batch_size 64 -> 32, train\.learning_rate "
                                          r"0\.003 -> 0\.001\. Resuming would silently change.*"
                                          r"new --workdir.*allow_changed_config=True"):
        train_and_evaluate(config, workdir, RESUME_LICENCE)
    assert (workdir / metadata.METADATA_FILE).read_text() == record  # nothing written

    config.train.allow_changed_config = True
    assert train_and_evaluate(config, workdir, RESUME_LICENCE)["step"] == 30
    stored = metadata.read(workdir)
    assert stored["config"]["train"]["batch_size"] == 32
    assert stored["config_changes"] == [{"at_step": 30, "fields": {
        "train.batch_size": [64, 32], "train.learning_rate": [0.003, 0.001]}}]
    # The changed config is now the run's: resuming with it needs no opt-in, and the record stays.
    config.train.allow_changed_config = False
    assert train_and_evaluate(config, workdir, RESUME_LICENCE)["step"] == 30
    assert metadata.read(workdir)["config_changes"] == stored["config_changes"]


def test_config_changes_lists_only_fields_that_change_the_run():
    from isnn_jax.training.config import default_config

    def base():
        config = default_config()  # with fixed values, whatever the embedded default's are
        config.seed, config.model.features, config.licence.kind = 0, (32, 64), "additive"
        return config

    old = base().to_dict()
    del old["train"]["allow_changed_config"]  # a workdir written before the field existed
    new = base()
    new.train.stop_after_steps, new.train.checkpoint_every_steps = 7, 3
    new.eval.random_licences, new.data.data_dir, new.parallelism = 5, "/elsewhere", "pmap"
    assert metadata.config_changes(old, new.to_dict(), default_config().to_dict()) == {}
    new.model.features, new.seed, new.licence.kind = (8, 16), 1, "shuffle"
    changes = metadata.config_changes(old, new.to_dict(), default_config().to_dict())
    assert metadata.describe_changes(changes) == (
        "licence.kind 'additive' -> 'shuffle', model.features (32, 64) -> (8, 16), seed 0 -> 1")


def training_steps(workdir: Path) -> list[int]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if "loss" in row]


def evaluation_steps(workdir: Path) -> list[int]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if any(k.startswith("test/") for k in row)]


def tensorboard_steps(workdir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(workdir / "tensorboard"))
    events.Reload()
    return [scalar.step for scalar in events.Scalars(tag)]


@pytest.mark.slow
def test_metrics_hold_each_step_once_after_a_kill_and_resume(workdir, data_dir):
    assert training_steps(workdir) == [10, 20, 30]
    # A kill after step 30 was logged but before its checkpoint was complete, in mid-line.
    shutil.rmtree(workdir / "checkpoints" / "30")
    with open(workdir / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 31, "lo')
    report = train_and_evaluate(short_config(data_dir), workdir, RESUME_LICENCE)
    assert report["step"] == 44
    assert training_steps(workdir) == [10, 20, 30, 40, 44]
    assert evaluation_steps(workdir) == [44]
    assert tensorboard_steps(workdir, "loss") == [10, 20, 30, 40, 44]
    # A rerun of the finished run only evaluates again: still one record of each.
    train_and_evaluate(short_config(data_dir), workdir, RESUME_LICENCE)
    assert training_steps(workdir) == [10, 20, 30, 40, 44]
    assert evaluation_steps(workdir) == [44]


def test_licence_inside_the_workdir_is_refused_anywhere_in_it(tmp_path):
    workdir = tmp_path / "run"
    (workdir / "exports").mkdir(parents=True)
    for inside in (workdir / "buyer.licence.json", workdir / "exports" / "l.json",
                   workdir / "checkpoints" / "l.json", workdir):
        with pytest.raises(LicenceError, match=r"inside the workdir .*keep it outside the workdir"):
            check_licence_outside(workdir, inside)
    os.symlink(workdir, tmp_path / "alias")
    with pytest.raises(LicenceError, match="inside the workdir"):
        check_licence_outside(tmp_path / "alias", workdir / "l.json")
    check_licence_outside(workdir, tmp_path / "buyer.licence.json")
    check_licence_outside(workdir, tmp_path / "run-licences" / "l.json")  # a prefix is not inside
