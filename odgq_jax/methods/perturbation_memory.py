"""ODG-Q's memory domain: one perturbation per training example, carried across epochs.

The table holds delta_i for every example i of the training split, in the frame of the
un-augmented image (so that it moves with the image under the pipeline's random crop and flip,
`odgq_jax/data/crop_flip.py`). When example i is seen (with crop-and-flip map A_i) and selects the
memory domain, it trains on

  x_adv = clip(x + A_i(delta_i), 0, 1),

and the input gradient g of that same backward pass steps the stored perturbation,

  v_i     <- mu v_i + A_i^T(g) / mean|A_i^T(g)|          (only with momentum mu > 0)
  delta_i <- P_i(delta_i + alpha sign(v_i))               (v_i = A_i^T(g) without momentum)

with P_i the projection onto the eps-ball and onto x_i + delta_i in [0, 1], applied where the crop
showed the pixel; pixels the crop cut away keep their stored value (their gradient is zero). So the
one forward-backward pass of an update both trains the network and takes one step of an attack
that accumulates over the epochs: the prior perturbation of FGSM-PGI (Jia et al. ECCV 2022) and
ATTA (Zheng et al. CVPR 2020), without their extra pass. The momentum is MI-FGSM's (Dong et al.
2018), the form FGSM-PGI's momentum prior takes. An example not yet stepped starts from
`initialization`: a uniform draw in the eps-ball, or zero.

Storage: with eps and the step size multiples of 1/255 (and eps not warmed up), every stored value
is an integer multiple of 1/255 in [-eps, eps] (images are k/255, the box [0, 1] and every step are
on that lattice), so the table is int8 in units of 1/255 and exact: 1 byte per pixel, 147 MiB for
CIFAR-10's 50,000 training images. Otherwise it is float32 (4 bytes per pixel). The momentum,
when used, is float32 (586 MiB for CIFAR-10). The tables are split over the devices by rows
(`per_example_keys`: each of D devices holds 1/D of the examples, so 147 / D MiB of int8 table on
each); a table over `MAX_TABLE_BYTES` in all is refused (ImageNet's 1.28 M images at 224 x 224 would
need 180 GiB at 1 byte per pixel: there the global domains are the ones that scale).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from odgq_jax.data import crop_flip
from odgq_jax.methods import perturbation_bank

INITIALIZATIONS = ("uniform", "zero")
PIXEL_LEVELS = 255
MAX_TABLE_BYTES = 8 * 2**30
GEOMETRY_KEYS = ("index", "crop_offset", "flip")


def is_on_pixel_lattice(value: float) -> bool:
  """Whether `value` is an integer multiple of 1/255 (to float precision)."""
  scaled = value * PIXEL_LEVELS
  return abs(scaled - round(scaled)) < 1e-4


def storage_dtype(eps: float, step_size: float, eps_warmup: bool) -> jnp.dtype:
  """int8 (exact, in units of 1/255) when eps and alpha are on the 1/255 lattice and eps is not
  warmed up; float32 otherwise."""
  exact = is_on_pixel_lattice(eps) and is_on_pixel_lattice(step_size) and not eps_warmup
  return jnp.int8 if exact else jnp.float32


def per_example_keys(momentum: bool) -> tuple[str, ...]:
  """The memory state's keys that hold one row per training example (all of them)."""
  return ("memory", "memory_visited") + (("memory_momentum",) if momentum else ())


def init_memory(num_examples: int, image_shape: tuple[int, ...], dtype: jnp.dtype,
                momentum: bool) -> dict[str, Any]:
  """The memory's state: the table (zero), which rows have been stepped (none) and the momentum.

  Raises:
    ValueError: the table would exceed MAX_TABLE_BYTES.
  """
  table_bytes = num_examples * math.prod(image_shape) * (
      np.dtype(dtype).itemsize + (4 if momentum else 0))
  if table_bytes > MAX_TABLE_BYTES:
    raise ValueError(
        f"odgq: the memory domain needs a table of {num_examples} x {image_shape} perturbations "
        f"({table_bytes / 2**30:.1f} GiB in all), over the {MAX_TABLE_BYTES / 2**30:.0f} GiB "
        "limit; use the global, local and random domains for a dataset this size")
  state = {"memory": jnp.zeros((num_examples, *image_shape), dtype),
           "memory_visited": jnp.zeros((num_examples,), jnp.bool_)}
  if momentum:
    state["memory_momentum"] = jnp.zeros((num_examples, *image_shape), jnp.float32)
  return state


def check_batch(batch: dict[str, jax.Array]) -> None:
  """Raises ValueError unless the batch says where each example sits (index, crop geometry)."""
  missing = [k for k in GEOMETRY_KEYS if k not in batch]
  if missing:
    raise ValueError(
        f"odgq: the memory domain needs train batches with {GEOMETRY_KEYS}, missing {missing}; "
        "the input pipeline yields them under augment='cifar' or 'none' (a random-resized crop, "
        "augment='imagenet', has no per-pixel map back to the stored image)")


def stored_values(table: jax.Array) -> jax.Array:
  """The table's perturbations as float32 (int8 storage is in units of 1/255)."""
  if table.dtype == jnp.int8:
    return table.astype(jnp.float32) / PIXEL_LEVELS
  return table


def _to_storage(values: jax.Array, dtype: jnp.dtype) -> jax.Array:
  if dtype == jnp.int8:
    return jnp.round(values * PIXEL_LEVELS).astype(jnp.int8)
  return values.astype(dtype)


def _initial_perturbation(key: jax.Array, shape: tuple[int, ...], eps: jax.Array | float,
                          initialization: str, dtype: jnp.dtype) -> jax.Array:
  if initialization == "zero":
    return jnp.zeros(shape, jnp.float32)
  if dtype == jnp.int8:  # uniform on the lattice, so that the table stays exact
    levels = round(float(eps) * PIXEL_LEVELS)
    return jax.random.randint(key, shape, -levels, levels + 1).astype(jnp.float32) / PIXEL_LEVELS
  return jax.random.uniform(key, shape, jnp.float32, -eps, eps)


def stored_perturbations(memory_state: dict[str, Any], batch: dict[str, jax.Array],
                         key: jax.Array, eps: jax.Array | float,
                         initialization: str) -> jax.Array:
  """delta_i of the batch's examples, in the stored frame [N, H, W, C] (the initial draw for rows
  not stepped yet)."""
  table = memory_state["memory"]
  index = batch["index"]
  rows = stored_values(table[index])
  start = _initial_perturbation(key, rows.shape, eps, initialization, table.dtype)
  visited = memory_state["memory_visited"][index]
  return jnp.where(visited[:, None, None, None], rows, start)


def to_augmented_frame(rows: jax.Array, batch: dict[str, jax.Array]) -> jax.Array:
  """A_i(delta_i): stored-frame perturbations in the frame of the batch's augmented images."""
  return crop_flip.to_augmented_frame(rows, batch["crop_offset"], batch["flip"])


def update(memory_state: dict[str, Any], batch: dict[str, jax.Array], rows: jax.Array,
           chose: jax.Array, used_delta: jax.Array, image_grad: jax.Array, *,
           step_size: jax.Array | float, eps: jax.Array | float,
           momentum: float) -> dict[str, Any]:
  """Steps the stored perturbation of every example that trained on the memory domain.

  Args:
    memory_state: the memory's state (`init_memory`).
    batch: the minibatch ("image", augmented, and the geometry keys).
    rows: the stored-frame perturbations this update drew (`stored_perturbations`).
    chose: [N], 1 where the example trained on the memory domain, 0 elsewhere.
    used_delta: x_adv - x of this update, augmented frame [N, H, W, C].
    image_grad: g = dLoss/dx_adv, augmented frame.
    step_size: alpha.
    eps: the radius of this update.
    momentum: mu; 0 for plain sign steps.

  Returns:
    The new memory state: rows of examples that chose the domain stepped where visible.
  """
  table = memory_state["memory"]
  index, offset, flip = batch["index"], batch["crop_offset"], batch["flip"]
  images = crop_flip.to_stored_frame(batch["image"], offset, flip)
  used = crop_flip.to_stored_frame(used_delta, offset, flip)
  grad = crop_flip.to_stored_frame(image_grad, offset, flip)
  stepped = crop_flip.visible_in_stored_frame(used_delta.shape, offset, flip) > 0
  direction = grad
  new_state = dict(memory_state)
  if "memory_momentum" in memory_state:
    velocity = memory_state["memory_momentum"][index]
    normaliser = jnp.maximum(jnp.mean(jnp.abs(grad), axis=(1, 2, 3), keepdims=True), 1e-12)
    direction = jnp.where(stepped, momentum * velocity + grad / normaliser, velocity)
  new_rows = perturbation_bank.update_local(used, direction, images, step_size, eps)
  chosen = chose[:, None, None, None] > 0
  old_rows = jnp.where(chosen, rows, stored_values(table[index]))
  new_state["memory"] = table.at[index].set(
      _to_storage(jnp.where(chosen & stepped, new_rows, old_rows), table.dtype))
  new_state["memory_visited"] = memory_state["memory_visited"].at[index].set(
      memory_state["memory_visited"][index] | (chose > 0))
  if "memory_momentum" in memory_state:
    new_state["memory_momentum"] = memory_state["memory_momentum"].at[index].set(
        jnp.where(chosen, direction, velocity))
  return new_state
