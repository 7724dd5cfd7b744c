"""The input pipelines (config.data.pipeline): memory, streaming and device give the same
batch for the same (seed, step), resume anywhere, and compute each epoch's order once."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from isnn_jax.data import pipeline
from isnn_jax.data.feeds import AUTO_MEMORY_LIMIT, PIPELINES, Prefetch, input_options
from isnn_jax.data.streaming import open_streams, train_share_bytes
from isnn_jax.data.streams import TrainStreams, load_streams
from isnn_jax.training.config import ConfigError, default_config
from isnn_jax.training.feeds import DeviceFeed, choose_pipeline
from isnn_jax.training.parallel import DataParallel, make_mesh
from isnn_jax.training.setup import dataset_of

BATCH = 64  # digits: 1,437 train examples, so 22 steps per epoch with one or two streams
AUGMENT = {"random_crop": 2, "random_flip": True}


def options(data_dir: str, streams: int, **extra):
    return dict(global_batch=BATCH, streams=streams, seed=5, process_index=0, process_count=1,
                data_dir=data_dir, **extra)


def assert_same(got: dict, expected: dict, what: str) -> None:
    assert got.keys() == expected.keys(), what
    for name, value in expected.items():
        have = np.asarray(got[name])
        assert have.dtype == value.dtype, (what, name, have.dtype)
        np.testing.assert_array_equal(have, value, err_msg=f"{what}: {name}")


def runner(kind: str = "sharded") -> DataParallel:
    """The trainer's data-parallel runner over this session's (2 fake CPU) devices; its step
    is never called here."""
    return DataParallel(kind, make_mesh(), lambda axis: (lambda *args: args))


def on_host(runner_: DataParallel, pieces, like: dict) -> dict:
    """A device batch as the step receives it, read back in host layout."""
    placed = runner_.assemble(pieces)
    return {name: np.asarray(placed[name]).reshape(like[name].shape) for name in like}


@pytest.mark.parametrize("streams,augment", [(1, {}), (2, {}), (2, AUGMENT)],
                         ids=["1-stream", "2-streams", "2-streams-augmented"])
def test_memory_streaming_and_device_batches_are_identical_across_an_epoch(
        data_dir: str, streams: int, augment: dict) -> None:
    memory = load_streams("digits", **options(data_dir, streams, **augment))
    streaming = open_streams("digits", **options(data_dir, streams, **augment))
    per_epoch = memory.steps_per_epoch
    assert streaming.steps_per_epoch == per_epoch == 22
    steps = range(per_epoch - 2, per_epoch + 3)  # the last steps of epoch 0, the first of 1
    sharded, pmap = runner("sharded"), runner("pmap")
    devices = DeviceFeed(memory, sharded), DeviceFeed(memory, pmap)
    with streaming.feed(steps[0], steps[-1] + 1) as feed:
        for step in steps:
            expected = memory.batch(step)
            assert_same(feed.batch(step), expected, f"streaming, step {step}")
            assert_same(on_host(sharded, devices[0].batch(step), expected), expected,
                        f"device (sharded), step {step}")
            assert_same(on_host(pmap, devices[1].batch(step), expected), expected,
                        f"device (pmap), step {step}")
    # Each stream's share is still its own: process 1 of 2 reads the second half.
    if streams == 2:
        second = open_streams("digits", **{**options(data_dir, 2, **augment),
                                          "process_index": 1, "process_count": 2})
        np.testing.assert_array_equal(second.batch(per_epoch)["image"],
                                      memory.batch(per_epoch)["image"][BATCH // 2:])


def test_device_rows_follow_the_mesh(data_dir: str) -> None:
    rows = runner().local_rows(BATCH)
    assert [(start, stop) for _, start, stop in rows] == [(0, 32), (32, 64)]
    assert [device for device, _, _ in rows] == jax.local_devices()[:2]


def test_resized_images_stream_as_they_load(data_dir: str) -> None:
    resized = {"image_shape": (6, 6, 3)}  # 8x8 grey digits to 6x6 RGB: converted and resized
    memory = load_streams("digits", **options(data_dir, 1, **resized))
    streaming = open_streams("digits", **options(data_dir, 1, **resized))
    assert memory.batch(3)["image"].shape == (BATCH, 6, 6, 3)
    assert_same(streaming.batch(3), memory.batch(3), "resized")


def test_resuming_at_any_step_gives_the_batch_of_a_run_from_zero(data_dir: str) -> None:
    memory = load_streams("digits", **options(data_dir, 2, **AUGMENT))
    streaming = open_streams("digits", **options(data_dir, 2, **AUGMENT))
    with streaming.feed(0, 30) as from_zero, Prefetch(memory.batch, 0) as prefetched:
        run = [(from_zero.batch(step), prefetched.batch(step)) for step in range(27)]
    for resume in (5, 21, 22, 26):
        with streaming.feed(resume, 30) as feed, Prefetch(memory.batch, resume) as again:
            assert_same(feed.batch(resume), run[resume][0], f"streaming resumed at {resume}")
            assert_same(again.batch(resume), run[resume][1], f"memory resumed at {resume}")
            assert_same(again.batch(resume + 1), memory.batch(resume + 1), "next step")
    # A feed asked out of order starts again there.
    with streaming.feed(0, 30) as feed:
        assert_same(feed.batch(9), memory.batch(9), "jump ahead")
        assert_same(feed.batch(2), memory.batch(2), "jump back")


def test_prefetch_hands_on_errors_and_stops() -> None:
    def make(step: int) -> int:
        if step == 3:
            raise ValueError("bad record 3")
        return step * 10

    with Prefetch(make, 1, depth=2) as feed:
        assert [feed.batch(1), feed.batch(2)] == [10, 20]
        with pytest.raises(ValueError, match="bad record 3"):
            feed.batch(3)
        assert feed.batch(4) == 40  # starts again from the step asked for
    assert Prefetch(make, 0, depth=0).batch(5) == 50


def counting(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    calls: list[tuple[int, int, int]] = []
    real = pipeline.epoch_permutation

    def counted(num_examples: int, seed: int, epoch: int) -> np.ndarray:
        calls.append((num_examples, seed, epoch))
        return real(num_examples, seed, epoch)

    monkeypatch.setattr(pipeline, "epoch_permutation", counted)
    return calls


def assert_once_per_epoch(calls: list[tuple[int, int, int]], streams: int, epochs: int) -> None:
    """Each stream's epochs 0 .. epochs-1 were permuted exactly once (and at most the next one,
    which a read-ahead may have started)."""
    assert len(calls) == len(set(calls)), calls
    done = sorted(epoch for _, _, epoch in calls if epoch < epochs)
    assert done == sorted(list(range(epochs)) * streams), calls
    assert all(epoch <= epochs for _, _, epoch in calls), calls


def test_each_epoch_is_permuted_once_per_stream(monkeypatch: pytest.MonkeyPatch,
                                                data_dir: str) -> None:
    calls = counting(monkeypatch)
    rng = np.random.default_rng(0)
    shards = tuple((rng.integers(0, 256, (20, 4, 4, 1), dtype=np.uint8),
                    np.arange(20, dtype=np.int32)) for _ in range(2))
    streams = TrainStreams(shards, 5, 3, 0)  # 4 steps per epoch
    with Prefetch(streams.batch, 0) as feed:
        batches = [feed.batch(step) for step in range(12)]
    assert_once_per_epoch(calls, 2, 3)
    # ... and gives exactly the batches of `batch_indices`, which permutes on every call.
    for step in (0, 5, 11):
        index = pipeline.batch_indices(20, 5, 3, step)
        np.testing.assert_array_equal(batches[step]["image"][:5],
                                      pipeline.to_float(shards[0][0][index]))
    calls.clear()
    streaming = open_streams("digits", **options(data_dir, 2))
    with streaming.feed(0, 50) as feed:
        for step in range(45):  # 22 steps per epoch: epochs 0, 1 and 2
            feed.batch(step)
    assert_once_per_epoch(calls, 2, 3)
    calls.clear()
    memory = load_streams("digits", **options(data_dir, 1))
    device = DeviceFeed(memory, runner())
    for step in range(23):
        device.batch(step)
    assert sorted(epoch for _, _, epoch in calls) == [0, 1]  # no read-ahead


def test_bad_pipeline_options_are_config_errors_naming_the_choices() -> None:
    config = default_config()
    config.data.pipeline = "fast"
    with pytest.raises(ConfigError, match=r"config\.data\.pipeline='fast' is not one of "
                                          r"auto, memory, streaming, device"):
        dataset_of(config)
    config.data.pipeline = "streaming"
    config.data.workers = -1
    with pytest.raises(ConfigError, match=r"config\.data\.workers=-1 must be a whole number"):
        dataset_of(config)
    assert input_options({}) == {"pipeline": "auto", "workers": 0, "prefetch": 2}
    assert PIPELINES == ("auto", "memory", "streaming", "device")


def test_auto_chooses_by_decoded_size_and_own_data_stays_in_memory(data_dir: str) -> None:
    share = train_share_bytes("digits", 2, data_dir=data_dir)
    assert share == 719 * 8 * 8 * 1  # 1,437 examples, the larger half
    assert train_share_bytes("image_folder", 1) is None
    assert choose_pipeline("auto", "digits", share)[0] == "memory"
    pick, why = choose_pipeline("auto", "imagenet2012", AUTO_MEMORY_LIMIT + 1)
    assert pick == "streaming" and "over 4 GiB" in why
    pick, why = choose_pipeline("streaming", "image_folder", None)
    assert pick == "memory" and "no TFDS record files" in why
    assert choose_pipeline("device", "digits", None)[0] == "device"


@pytest.mark.slow
def test_worker_processes_give_the_same_batches(data_dir: str) -> None:
    memory = load_streams("digits", **options(data_dir, 2, **AUGMENT))
    streaming = open_streams("digits", **options(data_dir, 2, **AUGMENT))
    with streaming.feed(18, 30, workers=2, prefetch=2) as feed:
        for step in range(18, 26):
            assert_same(feed.batch(step), memory.batch(step), f"2 workers, step {step}")
        assert_same(feed.batch(19), memory.batch(19), "2 workers, restarted")


@pytest.mark.slow
def test_trainer_steps_are_identical_on_every_pipeline(tmp_path: Path, data_dir: str) -> None:
    from isnn_jax import api
    from isnn_jax.training.loop import train_and_evaluate
    from tiny_config import RESUME_LICENCE, tiny_config

    params = {}
    runs = [("sharded", "memory"), ("sharded", "device"), ("sharded", "streaming"),
            ("pmap", "memory"), ("pmap", "device")]
    for parallelism, name in runs:
        config = tiny_config(data_dir, stop_after_steps=4, epochs=1)
        config.parallelism = parallelism
        config.data.pipeline = name
        config.data.random_flip = True
        workdir = tmp_path / f"{parallelism}-{name}"
        assert train_and_evaluate(config, workdir, RESUME_LICENCE)["step"] == 4
        params[parallelism, name] = api.load_protected(workdir).params
    for parallelism, name in runs:  # the same batches: the same parameters, bit for bit
        jax.tree.map(np.testing.assert_array_equal, params[parallelism, "memory"],
                     params[parallelism, name])
