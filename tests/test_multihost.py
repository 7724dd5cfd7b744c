"""Two JAX processes on 127.0.0.1 (4 fake CPU devices each) run the real trainer together.

The pair must match a one-process 8-device run with the same two input streams (also when the
pair streams its input from the record files), write one metadata file, stop together on
SIGTERM to one of them, and resume with both processes from a checkpoint after being
preempted or killed.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from isnn_jax import api
from isnn_jax.protection.licence import Licence, TransformSpec
from isnn_jax.cli.doors import EXIT_PREEMPTED

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # two-process clusters: minutes on 2 cores

TIMEOUT = 240  # seconds for one run of the pair; processes are killed after that

OVERRIDES = [
    "--config.model.features=(8,16)", "--config.model.hidden=32",
    "--config.model.detector_features=16", "--config.licence.epsilon=0.1",
    "--config.licence.kind=additive", "--config.licence.block_size=4",
    "--config.train.batch_size=64", "--config.train.epochs=1", "--config.train.warmup_steps=2",
    "--config.train.log_every_steps=5", "--config.train.checkpoint_every_steps=5",
    "--config.eval.random_licences=4", "--config.eval.near_per_class=1",
    "--config.objective.near_keys=8", "--config.data.streams=2",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(workdir, licence_path, data_dir, *, processes, devices, extra=(), per_process=None):
    """Start the trainer in `processes` processes; returns the Popen objects."""
    port = free_port()
    procs = []
    for index in range(processes):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        args = [sys.executable, "-m", "isnn_jax.train", "--workdir", str(workdir),
                "--licence", str(licence_path), f"--config.data.data_dir={data_dir}",
                *OVERRIDES, *extra, *((per_process or {}).get(index, ()))]
        if processes > 1:
            env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                       JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(index))
            args.append("--config.distributed=True")
        procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def wait_all(procs, timeout=TIMEOUT):
    """Outputs of all processes; kills every process if one fails or time runs out."""
    deadline = time.monotonic() + timeout
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1, deadline - time.monotonic()))
            outputs.append(out)
            assert proc.returncode == 0, out[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("multihost")
    licence = Licence(bytes(range(200, 232)), "(c) Seller; Buyer; multihost",
                      TransformSpec(epsilon=0.1))
    licence.save(root / "buyer.licence.json")
    return root, root / "buyer.licence.json", root / "tfds"


@pytest.fixture(scope="module")
def single(setup):
    root, licence_path, data_dir = setup
    wait_all(launch(root / "single", licence_path, data_dir, processes=1, devices=8))
    return root / "single"


def assert_same_params(a_dir, b_dir):
    a = api.load_protected(a_dir).params
    b = api.load_protected(b_dir).params
    # Same global batches and keys; the 8-way gradient sum may add in another order.
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5), a, b)


def assert_pair_matches_single(pair_dir, single, outputs):
    """The pair's run equals the one-process 8-device run: parameters, step and evaluation."""
    assert "legal accuracy" in outputs[0] and "legal accuracy" not in outputs[1]
    assert "global batch 64 on 8 devices" in outputs[0]
    assert_same_params(single, pair_dir)
    assert api.load_protected(pair_dir).step == api.load_protected(single).step == 22
    # Evaluation is split over the two processes and gathered: the same report as one process.
    pair = json.loads((pair_dir / "final_evaluation.json").read_text())
    alone = json.loads((single / "final_evaluation.json").read_text())
    assert pair["wrong_key"]["count"] == 4 and pair["near_key"].keys() == alone["near_key"].keys()
    for name in ("legal_accuracy", "clean_accuracy"):
        assert pair[name] == pytest.approx(alone[name], abs=0.01)
    assert pair["wrong_key"]["mean"] == pytest.approx(alone["wrong_key"]["mean"], abs=0.01)


def wait_for_checkpoint_after(workdir, step, procs):
    """Block until a checkpoint newer than `step` exists (or every process has exited)."""
    deadline = time.monotonic() + TIMEOUT
    directory = workdir / "checkpoints"
    while not (directory.is_dir() and any(p.name.isdigit() and int(p.name) > step
                                          for p in directory.iterdir())):
        assert time.monotonic() < deadline, f"no checkpoint after step {step} in time"
        if all(p.poll() is not None for p in procs):
            return
        time.sleep(0.2)


def test_preempted_then_killed_pair_resumes_with_both_processes(setup, single):
    root, licence_path, data_dir = setup
    workdir = root / "killed"
    # 1. SIGTERM to one process: JAX's preemption service stops both at the same step, both save.
    procs = launch(workdir, licence_path, data_dir, processes=2, devices=4)
    try:
        wait_for_checkpoint_after(workdir, 0, procs)
        procs[1].send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=TIMEOUT)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert [proc.returncode for proc in procs] == [EXIT_PREEMPTED] * 2, outputs
    steps = {int(re.search(r"preempted by SIGTERM at step (\d+)", out).group(1)) for out in outputs}
    assert len(steps) == 1, outputs
    stopped = steps.pop()
    assert (workdir / "checkpoints" / str(stopped)).is_dir()
    # 2. A crash (SIGKILL of both) after a later checkpoint.
    procs = launch(workdir, licence_path, data_dir, processes=2, devices=4)
    try:
        wait_for_checkpoint_after(workdir, stopped, procs)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    # 3. The rerun resumes and ends where the uninterrupted one-process run ends: two processes
    # of 4 devices match one of 8 (parameters, step, the gathered evaluation). One pair run
    # checks both, since an uninterrupted pair would repeat the same computation.
    outputs = wait_all(launch(workdir, licence_path, data_dir, processes=2, devices=4))
    assert "resumed from checkpoint at step" in outputs[0]
    assert_pair_matches_single(workdir, single, outputs)


def test_streaming_pair_matches_the_one_process_run(setup, single):
    """Each process streams its own stream's shard from the record files (grain, one worker
    process each) in the memory input's order: the pair ends where the one-process run, which
    reads both streams from memory, ends."""
    root, licence_path, data_dir = setup
    workdir = root / "streaming"
    outputs = wait_all(launch(workdir, licence_path, data_dir, processes=2, devices=4,
                              extra=["--config.data.pipeline=streaming",
                                     "--config.data.workers=1"]))
    assert "input pipeline: streaming (as config.data.pipeline asks" in outputs[0]
    assert_pair_matches_single(workdir, single, outputs)


def test_processes_with_different_configs_refuse_to_train(setup):
    root, licence_path, data_dir = setup
    procs = launch(root / "mismatch", licence_path, data_dir, processes=2, devices=4,
                   per_process={1: ["--config.train.learning_rate=0.5"]})
    try:
        outputs = [proc.communicate(timeout=TIMEOUT)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [proc.returncode for proc in procs] == [2, 2], outputs
    assert "error: the config differs between processes (process 0 vs processes [1])" in outputs[0]
    assert not (root / "mismatch" / "checkpoints").exists()
