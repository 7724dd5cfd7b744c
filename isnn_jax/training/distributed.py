"""Joining a multi-process JAX cluster, and proving that every process runs the same job."""

from __future__ import annotations

import hashlib
import os

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from isnn_jax.protection.licence import Licence
from isnn_jax.training.config import ConfigError


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """Join the multi-process JAX cluster when config.distributed is set (once per process).

    Coordinator address, process count and id come from the environment (JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES, JAX_PROCESS_ID) or are detected on Cloud TPU and Slurm.
    """
    if not config.distributed or jax.distributed.is_initialized():
        return
    count, index = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
    jax.distributed.initialize(num_processes=int(count) if count else None,
                               process_id=int(index) if index else None)


def check_processes_agree(config: ml_collections.ConfigDict, licence: Licence | None) -> None:
    """Every process must run the same config with the same licence; compares hashes only."""
    if jax.process_count() == 1:
        return
    config_hash = hashlib.sha256(config.to_json(sort_keys=True).encode()).digest()[:4]
    licence_hash = bytes.fromhex(licence.fingerprint()[:8]) if licence else bytes(4)
    mine = np.frombuffer(config_hash + licence_hash, dtype=np.uint32)
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), 2)
    for column, what, fix in ((0, "config", "pass the same --config file and overrides"),
                              (1, "licence", "copy the same licence file to every worker")):
        if (every[:, column] != every[0, column]).any():
            odd = [int(i) for i in np.nonzero(every[:, column] != every[0, column])[0]]
            raise ConfigError(f"the {what} differs between processes (process 0 vs processes "
                              f"{odd}); {fix}")
