"""Data parallelism: a 1-D device mesh with the batch on the `data` axis, state replicated."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from isnn_jax.base import compilation

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A mesh over all (global) devices with one `data` axis."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the `data` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full value on every device."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch: int, mesh: Mesh, illegal_every: int = 1) -> None:
    """The global batch must split evenly over the devices and the processes, and each device's
    share by `illegal_every` (so every device count picks the same examples for illegal views)."""
    devices = mesh.devices.size
    if global_batch % devices:
        raise ValueError(
            f"train.batch_size={global_batch} does not divide by the {devices} devices; "
            f"use a multiple of {devices}, e.g. --config.train.batch_size="
            f"{max(devices, global_batch // devices * devices)}"
        )
    if global_batch % jax.process_count():
        raise ValueError(
            f"train.batch_size={global_batch} does not divide by {jax.process_count()} processes"
        )
    if illegal_every < 1 or (global_batch // devices) % illegal_every:
        raise ValueError(
            f"objective.illegal_every={illegal_every} must be at least 1 and divide each "
            f"device's {global_batch // devices} examples (train.batch_size={global_batch} over "
            f"{devices} devices); use a divisor such as 1, 2 or 4")


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble this process's share of the batch into global arrays sharded on `data`."""
    sharding = batch_sharding(mesh)
    return {name: jax.make_array_from_process_local_data(sharding, value)
            for name, value in local.items()}


class DeviceBatch(dict):
    """A batch already on the devices: name -> one array per device of `DataParallel.local_rows`
    (in that order), each holding that device's rows of this process's share."""


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree (the same value on every process) on every device of the mesh.

    Built from each process's own copy, so it also works when the mesh spans processes.
    """
    sharding = replicated(mesh)

    def place(x: Any) -> jax.Array:
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = place(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        value = np.asarray(x)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(place, tree)


def host_copy(tree: Any) -> Any:
    """NumPy copies of replicated arrays, read from this process's first shard (multi-host safe)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


PARALLELISM = ("sharded", "pmap")


class DataParallel:
    """Runs one pure train step data-parallel, by sharded `jax.jit` or by `jax.pmap`.

    The canonical state (what checkpoints and evaluation see) is always laid out on the mesh,
    replicated; `pmap` keeps its own per-device copy between `place` and `canonical`.
    """

    def __init__(self, kind: str, mesh: Mesh, make_step: Any) -> None:
        """`make_step(axis_name)` returns the pure step (axis_name is None for sharded jit)."""
        if kind not in PARALLELISM:
            raise ValueError(f"unknown config.parallelism {kind!r}; choose one of "
                             f"{', '.join(PARALLELISM)}")
        self.kind, self.mesh = kind, mesh
        repl = replicated(mesh)
        if kind == "sharded":
            self._step = compilation.jit(make_step(None),
                                         in_shardings=(repl, batch_sharding(mesh), repl, repl),
                                         out_shardings=(repl, repl), donate_argnums=(0,))
        else:
            self._devices = jax.local_devices()
            self._step = jax.pmap(make_step(DATA_AXIS), axis_name=DATA_AXIS,
                                  in_axes=(0, 0, None, None), donate_argnums=(0,),
                                  devices=self._devices)

    def broadcast(self, tree: Any) -> Any:
        """Step arguments every device needs whole (the rng, the licence and near keys)."""
        return replicate(tree, self.mesh) if self.kind == "sharded" else tree

    def place(self, state: Any) -> Any:
        """The canonical (mesh-replicated) state in the layout this path steps on."""
        if self.kind == "sharded":
            return state
        count = len(self._devices)  # pmap splits a leading axis of size `count` over the devices
        return jax.tree.map(lambda x: np.stack([x] * count), host_copy(state))

    def canonical(self, state: Any) -> Any:
        """The stepped state back in the mesh-replicated layout (for checkpoints and evaluation)."""
        if self.kind == "sharded":
            return state
        return replicate(jax.tree.map(lambda x: np.asarray(x[0]), state), self.mesh)

    def local_rows(self, local_batch: int) -> list[tuple[jax.Device, int, int]]:
        """(device, start, stop): which rows of this process's share of the batch each of its
        devices holds, as `step` lays a host batch out."""
        if self.kind == "pmap":
            per = local_batch // len(self._devices)
            return [(device, i * per, (i + 1) * per) for i, device in enumerate(self._devices)]
        shape = (local_batch * jax.process_count(),)
        spans = {device: index[0].indices(shape[0])[:2] for device, index
                 in batch_sharding(self.mesh).addressable_devices_indices_map(shape).items()}
        first = min(start for start, _ in spans.values())
        return sorted(((device, start - first, stop - first)
                       for device, (start, stop) in spans.items()), key=lambda row: row[1])

    def assemble(self, pieces: DeviceBatch) -> dict[str, jax.Array]:
        """A batch gathered on the devices as the arrays the step takes (no copy)."""
        placed = {}
        for name, arrays in pieces.items():
            rows = sum(a.shape[0] for a in arrays)
            if self.kind == "sharded":
                shape = (rows * jax.process_count(), *arrays[0].shape[1:])
                placed[name] = jax.make_array_from_single_device_arrays(
                    shape, batch_sharding(self.mesh), arrays)
            else:
                local = Mesh(np.asarray(self._devices), (DATA_AXIS,))
                shape = (len(arrays), arrays[0].shape[0], *arrays[0].shape[1:])
                placed[name] = jax.make_array_from_single_device_arrays(
                    shape, NamedSharding(local, PartitionSpec(DATA_AXIS)),
                    [a[None] for a in arrays])
        return placed

    def step(self, state: Any, local_batch: dict[str, np.ndarray] | DeviceBatch, rng: jax.Array,
             keys: Any) -> tuple[Any, dict[str, jax.Array]]:
        """One step on this process's share of the global batch (host arrays, or a
        `DeviceBatch` already on the devices); metrics are global means."""
        on_devices = isinstance(local_batch, DeviceBatch)
        if self.kind == "sharded":
            batch = self.assemble(local_batch) if on_devices else global_batch(local_batch, self.mesh)
            return self._step(state, batch, rng, keys)
        if on_devices:
            split = self.assemble(local_batch)
        else:
            count = len(self._devices)
            split = {name: value.reshape(count, value.shape[0] // count, *value.shape[1:])
                     for name, value in local_batch.items()}
        state, metrics = self._step(state, split, rng, keys)
        return state, jax.tree.map(lambda m: m[0], metrics)
