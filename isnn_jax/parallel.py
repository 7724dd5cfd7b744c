"""Data parallelism: a 1-D device mesh with the batch on the `data` axis, state replicated."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

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


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
    """The global batch must split evenly over the devices and the processes."""
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


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble this process's share of the batch into global arrays sharded on `data`."""
    sharding = batch_sharding(mesh)
    return {name: jax.make_array_from_process_local_data(sharding, value)
            for name, value in local.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))
