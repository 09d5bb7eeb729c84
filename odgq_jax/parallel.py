"""Data parallelism over all devices of all hosts: the device mesh, shardings and batch placement.

The train and eval steps are plain `jax.jit` functions over a one-axis `Mesh` named `data`: the
batch is sharded along its leading axis, and so is a training method's state kept per example of
the batch or of the training split (Free-AT's carried perturbation, ODG-Q's memory table:
`TrainingMethod.per_example_state`); everything else (parameters, optimizer state, ODG-Q's
universal perturbations) is replicated. Under jit, reductions over the batch (the loss mean,
BatchNorm statistics) are computed over the *global* batch, so no explicit `psum` is needed.

Multi-host: call `jax.distributed.initialize()` first; each process then feeds only its own slice of
the data and `make_global_batch` assembles the global array from the per-process pieces.
"""
from __future__ import annotations

import collections
import itertools
from typing import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def create_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A one-axis mesh (`data`) over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the `data` axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """The same full value on every device."""
  return NamedSharding(mesh, PartitionSpec())


def check_batch_divides(global_batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
  """Raises ValueError unless the global batch splits evenly over the mesh's devices."""
  if global_batch_size % mesh.size:
    raise ValueError(
        f"{what}={global_batch_size} does not divide evenly over the {mesh.size} devices of the "
        f"mesh; use a multiple of {mesh.size}")


def make_global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Turns this process's numpy batch into global arrays sharded over the `data` axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def prefetch_to_mesh(batches: Iterable[dict[str, np.ndarray]], mesh: Mesh,
                     size: int = 2) -> Iterator[dict[str, jax.Array]]:
  """Yields global batches, keeping `size` of them already transferred ahead of the consumer.

  Transfers are dispatched asynchronously, so the copy of batch i+1 overlaps the step on batch i.
  """
  queue: collections.deque[dict[str, jax.Array]] = collections.deque()
  iterator = iter(batches)
  for local_batch in itertools.islice(iterator, size):
    queue.append(make_global_batch(local_batch, mesh))
  while queue:
    yield queue.popleft()
    for local_batch in itertools.islice(iterator, 1):
      queue.append(make_global_batch(local_batch, mesh))
