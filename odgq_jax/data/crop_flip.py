"""The geometry of the CIFAR augmentation (zero-pad, crop, horizontal flip), in JAX.

The input pipeline augments every training image in tf.data (`input_pipeline.py`): zero-pad
`PAD_PIXELS` pixels per side, crop back to the stored size at offset (top, left) in
0..2 * PAD_PIXELS, and flip left-right with probability 1/2; each batch carries the offsets
(`crop_offset` [N, 2]) and flips (`flip` [N]) it applied. The map from the stored image's frame to
the augmented frame is linear, A(d)[i, j] = pad(d)[top + i, left + j'] with j' = j or W - 1 - j,
so a quantity kept in the stored frame (ODG-Q's per-example memory of perturbations) follows the
image under augmentation with `to_augmented_frame`, and the stored-frame value of an
augmented-frame array is its transpose, `to_stored_frame` (A^T: each visible pixel back in place,
zero where the crop cut the stored pixel away; `visible_in_stored_frame` says which). This module
imports no TensorFlow.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

PAD_PIXELS = 4


def _crop_flip_one(padded: jax.Array, offset: jax.Array, flip: jax.Array,
                   size: tuple[int, int]) -> jax.Array:
  cropped = jax.lax.dynamic_slice(padded, (offset[0], offset[1], 0),
                                  (size[0], size[1], padded.shape[-1]))
  return jnp.where(flip, cropped[:, ::-1], cropped)


def to_augmented_frame(stored: jax.Array, crop_offset: jax.Array, flip: jax.Array,
                       pad: int = PAD_PIXELS) -> jax.Array:
  """A(d): arrays [N, H, W, C] in the stored frame -> the frame of the augmented images.

  Args:
    stored: [N, H, W, C], in the frame of the un-augmented images.
    crop_offset: int [N, 2], (top, left) of each crop in the padded image, each in 0..2 pad.
    flip: bool [N], whether each crop was flipped left-right.
    pad: the zero padding per side.

  Returns:
    [N, H, W, C]: zero where the augmented image shows padding.
  """
  height, width = stored.shape[1:3]
  padded = jnp.pad(stored, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  return jax.vmap(_crop_flip_one, in_axes=(0, 0, 0, None))(padded, crop_offset, flip,
                                                           (height, width))


def to_stored_frame(augmented: jax.Array, crop_offset: jax.Array, flip: jax.Array,
                    pad: int = PAD_PIXELS) -> jax.Array:
  """A^T(a): augmented-frame arrays [N, H, W, C] back to the stored frame.

  Returns:
    [N, H, W, C]: each stored pixel's value in `augmented` where the crop kept it, zero where the
    crop cut it away.
  """
  transpose = jax.linear_transpose(
      lambda stored: to_augmented_frame(stored, crop_offset, flip, pad),
      jax.ShapeDtypeStruct(augmented.shape, augmented.dtype))
  (values,) = transpose(augmented)
  return values


def visible_in_stored_frame(shape: tuple[int, ...], crop_offset: jax.Array, flip: jax.Array,
                            pad: int = PAD_PIXELS) -> jax.Array:
  """A^T(1) [N, H, W, C]: 1 where the crop kept the stored pixel, 0 where it cut it away."""
  return to_stored_frame(jnp.ones(shape), crop_offset, flip, pad)
