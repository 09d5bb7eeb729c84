"""Input diversity: the random resize-and-pad transform of DI-FGSM.

Xie et al. 2019, "Improving transferability of adversarial examples with input diversity": with
probability p, an H x W image is resized to rnd x rnd' with rnd a uniform integer in
[H, floor(resize_factor * H)] (and rnd' = rnd * W / H), then zero-padded at a uniform random
integer offset to the canvas S_H x S_W = floor(resize_factor * H) x floor(resize_factor * W);
otherwise it is left as is. The paper feeds the canvas to a network that takes any size; here the
canvas is resized back to H x W, so that the transform fits any `logits_fn`.

Both resamplings are bilinear and differentiable (the gradient of the attack flows through them).
Random sizes would give data-dependent shapes, so the resize-and-pad step is one
`jax.image.scale_and_translate` onto the fixed-size canvas (canvas pixels outside the resized
image are 0), followed by the fixed-size resize back to H x W.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from odgq_jax.attacks.projection import per_example


def _resize_and_pad(image: jax.Array, key: jax.Array, resize_factor: float) -> jax.Array:
  """One [H, W, C] image, randomly resized and padded into its canvas, resized back to H x W."""
  height, width, channels = image.shape
  canvas_height, canvas_width = int(resize_factor * height), int(resize_factor * width)
  size_key, top_key, left_key = jax.random.split(key, 3)
  resized_height = jax.random.randint(size_key, (), height, canvas_height + 1)
  scale = resized_height / height
  resized_width = scale * width
  top = jax.random.randint(top_key, (), 0, canvas_height - resized_height + 1)
  left = jax.random.randint(left_key, (), 0,
                            jnp.floor(canvas_width - resized_width).astype(jnp.int32) + 1)
  canvas = jax.image.scale_and_translate(
      image, (canvas_height, canvas_width, channels), spatial_dims=(0, 1),
      scale=jnp.stack([scale, scale]).astype(image.dtype),
      translation=jnp.stack([top, left]).astype(image.dtype), method="linear", antialias=False)
  return jax.image.resize(canvas, image.shape, method="linear")


def input_diversity(key: jax.Array, images: jax.Array, probability: float,
                    resize_factor: float) -> jax.Array:
  """Applies the random resize-and-pad transform to each image of [N, H, W, C] with `probability`.

  Each example draws its own size, offsets and Bernoulli(probability) choice from `key`.
  """
  batch = images.shape[0]
  apply_key, transform_key = jax.random.split(key)
  transformed = jax.vmap(lambda image, image_key: _resize_and_pad(image, image_key, resize_factor))(
      images, jax.random.split(transform_key, batch))
  apply = jax.random.bernoulli(apply_key, probability, (batch,))
  return jnp.where(per_example(apply, images), transformed, images)
