"""Preemption, crashes mid-save, damaged checkpoints, non-finite training, unusable workdirs."""

import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from isnn_jax import api
from isnn_jax.training.checkpoints import CheckpointError
from isnn_jax.cli.doors import EXIT_PREEMPTED
from isnn_jax.training.loop import NonFiniteLossError, train_and_evaluate
from isnn_jax.training.setup import WorkdirError
from tiny_config import RESUME_LICENCE, short_config

TESTS = Path(__file__).resolve().parent
TOTAL_STEPS = 2 * (1437 // 64)  # short_config: two epochs of the digits training split


def cli_args(workdir: Path, licence_file: Path, data_dir: str, *extra: str) -> list[str]:
    """The train CLI with the same settings as `short_config(data_dir)`."""
    return [sys.executable, "-m", "isnn_jax.train", f"--config={TESTS / 'tiny_config.py'}",
            f"--workdir={workdir}", f"--licence={licence_file}",
            f"--config.data.data_dir={data_dir}", "--config.train.epochs=2",
            "--config.train.checkpoint_every_steps=15", "--config.eval.random_licences=0", *extra]


def wait_for_step(workdir: Path, step: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Block until the run has logged `step` to metrics.jsonl."""
    deadline = time.monotonic() + timeout
    metrics = workdir / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.exists() and any(json.loads(line)["step"] >= step
                                    for line in metrics.read_text().splitlines() if line):
            return
        if process.poll() is not None:
            raise AssertionError(f"training exited early: {process.communicate()}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError("training did not reach step %d in time" % step)


def assert_same_as_uninterrupted(workdir: Path, uninterrupted) -> None:
    full_dir, full = uninterrupted
    jax.tree.map(np.testing.assert_array_equal, api.load_protected(full_dir).params,
                 api.load_protected(workdir).params)
    report = json.loads((workdir / "final_evaluation.json").read_text())
    assert report["legal_accuracy"] == full["legal_accuracy"]
    assert report["clean_accuracy"] == full["clean_accuracy"]


@pytest.fixture
def licence_file(tmp_path):
    return RESUME_LICENCE.save(tmp_path / "buyer.licence.json")


@pytest.mark.slow
def test_sigterm_saves_exits_75_and_the_rerun_matches_bit_for_bit(tmp_path, data_dir,
                                                                   uninterrupted, licence_file):
    workdir = tmp_path / "w"
    args = cli_args(workdir, licence_file, data_dir)
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_step(workdir, 10, first)
        # A random step after 10: the tiny run takes 50-120 steps/s here, so up to 0.1 s lands
        # well before its 44th step (a longer sleep let it finish before the signal came).
        time.sleep(random.uniform(0.0, 0.1))
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == EXIT_PREEMPTED, stderr
    stopped = int(re.search(r"preempted by SIGTERM at step (\d+)", stderr).group(1))
    assert 10 <= stopped < TOTAL_STEPS
    assert (workdir / "checkpoints" / str(stopped)).is_dir()  # saved at the exact step
    second = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr
    assert f"resumed from checkpoint at step {stopped}" in second.stderr
    assert_same_as_uninterrupted(workdir, uninterrupted)


@pytest.mark.slow
def test_sigkill_during_saves_leaves_a_usable_checkpoint(tmp_path, data_dir, uninterrupted,
                                                         licence_file):
    workdir = tmp_path / "w"
    args = cli_args(workdir, licence_file, data_dir, "--config.train.checkpoint_every_steps=1")
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_step(workdir, 10, first)
        time.sleep(random.uniform(0.0, 1.0))  # saves run every step: likely in the middle of one
    finally:
        first.kill()
        first.wait(timeout=60)
    second = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr
    assert re.search(r"resumed from checkpoint at step \d+", second.stderr)
    assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
    assert_same_as_uninterrupted(workdir, uninterrupted)


def damage(step_dir: Path, how: str) -> None:
    """Truncate every data file of a checkpoint's parameters, or change one parameter value on
    disk behind the step record's back, as bit rot inside the array bytes would.

    The garble rewrites the `params` item with Orbax itself rather than flipping file bytes:
    OCDBT keeps unreferenced copies of small values (the per-process B-tree nodes), so a flip
    in some file may land in bytes no restore reads, and the test would then prove nothing."""
    params_dir = step_dir / "params"
    if how == "garble":
        checkpointer = ocp.StandardCheckpointer()
        params = checkpointer.restore(params_dir)
        leaves, treedef = jax.tree.flatten(params)
        leaves[0] = np.asarray(leaves[0]).copy()
        leaves[0].flat[0] += 1.0
        shutil.rmtree(params_dir)
        checkpointer.save(params_dir, jax.tree.unflatten(treedef, leaves))
        checkpointer.wait_until_finished()
        checkpointer.close()
        return
    files = [p for p in params_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for path in files:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncate", "garble"])
def test_damaged_newest_checkpoint_is_reported_set_aside_and_the_previous_used(
        tmp_path, data_dir, uninterrupted, caplog, how):
    workdir = tmp_path / "w"
    stopped = train_and_evaluate(short_config(data_dir, stop_after_steps=30), workdir,
                                 RESUME_LICENCE)
    assert stopped["step"] == 30
    damage(workdir / "checkpoints" / "30", how)
    with caplog.at_level(logging.WARNING, logger="isnn_jax"):
        train_and_evaluate(short_config(data_dir), workdir, RESUME_LICENCE)
    warning = caplog.text
    assert "checkpoint at step 30" in warning and "is unusable" in warning
    if how == "garble":  # Orbax restores garbled bytes silently: only the digest catches them
        assert "do not match their recorded digest" in warning
    assert "resuming from step 15" in warning
    assert (workdir / "checkpoints" / "30.corrupt").is_dir()
    assert_same_as_uninterrupted(workdir, uninterrupted)


@pytest.mark.slow
def test_inference_skips_a_damaged_newest_checkpoint_and_says_so(tmp_path, data_dir, caplog):
    workdir = tmp_path / "w"
    train_and_evaluate(short_config(data_dir, stop_after_steps=30), workdir, RESUME_LICENCE)
    damage(workdir / "checkpoints" / "30", "garble")
    with caplog.at_level(logging.WARNING, logger="isnn_jax"):
        model = api.load_protected(workdir)
    assert model.step == 15
    assert "using the checkpoint at step 15 instead" in caplog.text
    with pytest.raises(CheckpointError, match="step 30: CheckpointError: the params do not match"):
        api.load_protected(workdir, step=30)


@pytest.mark.slow
def test_no_usable_checkpoint_is_an_error_not_a_silent_restart(tmp_path, data_dir):
    workdir = tmp_path / "w"
    train_and_evaluate(short_config(data_dir, stop_after_steps=15), workdir, RESUME_LICENCE)
    damage(workdir / "checkpoints" / "15", "garble")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint in .*step 15: .*digest.*"
                                              r"Restore the directory from a backup"):
        train_and_evaluate(short_config(data_dir), workdir, RESUME_LICENCE)
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["15"]  # untouched


@pytest.mark.slow
def test_non_finite_loss_names_the_step_and_keeps_a_finite_checkpoint(tmp_path, data_dir):
    workdir = tmp_path / "w"
    config = short_config(data_dir, checkpoint_every_steps=1, learning_rate=1e30)
    with pytest.raises(NonFiniteLossError, match=r"at step (\d+).*learning rate.*\[0, 1\]") as err:
        train_and_evaluate(config, workdir, RESUME_LICENCE)
    bad_step = int(re.search(r"at step (\d+)", str(err.value)).group(1))
    model = api.load_protected(workdir)
    assert model.step < bad_step
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(model.params))


def test_unusable_workdir_is_named_before_anything_is_written(tmp_path, data_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(WorkdirError, match=r"workdir .*file/w is not usable .*choose another "
                                           r"--workdir"):
        train_and_evaluate(short_config(data_dir), blocker / "w", RESUME_LICENCE)
    assert sorted(os.listdir(tmp_path)) == ["file"]


def secret_encodings(licence) -> dict[str, bytes]:
    """Every form the secret (or the key derived from it) could take in a file or a log."""
    import base64

    forms = {}
    for name, raw in (("secret", licence.secret), ("key", licence.key_bytes()),
                      ("threefry key", licence.key_bytes()[:8])):
        forms.update({
            f"{name} raw": raw, f"{name} hex": raw.hex().encode(),
            f"{name} HEX": raw.hex().upper().encode(), f"{name} base64": base64.b64encode(raw),
            f"{name} base64url": base64.urlsafe_b64encode(raw).rstrip(b"="),
            f"{name} repr": repr(raw).encode(),
        })
    return forms


@pytest.mark.slow
def test_no_output_or_log_holds_the_secret_in_any_encoding(tmp_path, data_dir):
    """Train, evaluate, show, export, predict and attack; then search everything they wrote."""
    licence_path = tmp_path / "secret" / "buyer.licence.json"
    licence_path.parent.mkdir()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    train = subprocess.run(
        [sys.executable, "-m", "isnn_jax.train", f"--config={TESTS / 'tiny_config.py'}",
         f"--workdir={tmp_path / 'w'}", f"--issue_licence={licence_path}",
         f"--config.data.data_dir={data_dir}", "--config.train.epochs=1",
         "--config.eval.random_licences=8"], capture_output=True, timeout=300, env=env)
    assert train.returncode == 0, train.stderr[-2000:]
    evaluate = subprocess.run(
        [sys.executable, "-m", "isnn_jax.evaluate", f"--workdir={tmp_path / 'w'}",
         f"--licence={licence_path}", "--random_licences=8", "--near_per_class=1",
         f"--out={tmp_path / 'report.json'}"], capture_output=True, timeout=300, env=env)
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]
    np.save(tmp_path / "inputs.npy", np.random.default_rng(0).random((4, 8, 8, 1), np.float32))
    later = {name: subprocess.run([sys.executable, "-m", *args], capture_output=True, timeout=120,
                                  env=env)
             for name, args in {
                 "show": ["isnn_jax.licence", "show", str(licence_path)],
                 "export": ["isnn_jax.export", f"--workdir={tmp_path / 'w'}",
                            f"--out={tmp_path / 'model.isnn'}"],
                 "predict": ["isnn_jax.predict", f"--workdir={tmp_path / 'w'}",
                             f"--licence={licence_path}", "--json", str(tmp_path / "inputs.npy")],
                 "attack": ["isnn_jax.attack", f"--workdir={tmp_path / 'w'}",
                            f"--licence={licence_path}", f"--out={tmp_path / 'attack'}",
                            "--attacks=key_guessing,near_keys,pruning,estimation",
                            "--preset=quick", "--budget=pruning.sparsities=(0.0,0.5)"],
             }.items()}
    for name, result in later.items():
        assert result.returncode == 0, (name, result.stderr[-2000:])
    from isnn_jax.protection.licence import Licence

    licence = Licence.load(licence_path)
    assert oct(licence_path.stat().st_mode & 0o777) == "0o600"
    outputs = {f"{run} {stream}": getattr(result, stream)
               for run, result in {"train": train, "evaluate": evaluate, **later}.items()
               for stream in ("stdout", "stderr")}
    assert b"fingerprint" in later["show"].stdout
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p != licence_path]
    assert any("tfevents" in p.name for p in files)
    assert {tmp_path / "report.json", tmp_path / "model.isnn",
            tmp_path / "attack" / "report.json", tmp_path / "attack" / "report.md"} <= set(files)
    outputs.update({str(p): p.read_bytes() for p in files})
    leaks = [(where, form) for where, content in outputs.items()
             for form, needle in secret_encodings(licence).items() if needle in content]
    assert not leaks
