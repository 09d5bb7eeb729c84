"""Threat-model geometry: projections onto the eps-balls intersected with the image box [0, 1].

Shared by the attacks and by adversarial training (PGD-AT, the ODG-Q perturbation bank), so the
functions take any shapes: `adv` and `images` are arrays of one shape whose leading axis is the
batch (for the per-example L2 norm; the L-inf functions are elementwise), and `eps` is a scalar or
an array broadcastable as documented per function.

Clipping to [0, 1] after projecting onto the ball keeps the point in the ball: for images in
[0, 1], clipping moves every coordinate of `adv` towards the image's, so no norm of adv - images
grows. The result is then the exact projection onto the intersection for L-inf (the constraints
are per coordinate) and a feasible point for L2.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

PIXEL_MIN = 0.0
PIXEL_MAX = 1.0

# The protocol's L-inf radius for CIFAR-10, the default of every attack's settings.
DEFAULT_EPS = 8 / 255

# Guards divisions by norms of all-zero perturbations or gradients.
NORM_FLOOR = 1e-12


def per_example(values: jax.Array, like: jax.Array) -> jax.Array:
  """Reshapes per-example `values` [N] to [N, 1, ..., 1], broadcastable against `like` [N, ...]."""
  return jnp.reshape(values, values.shape + (1,) * (like.ndim - values.ndim))


def per_example_norm(x: jax.Array, order: int) -> jax.Array:
  """The L1 or L2 norm (`order` 1 or 2) of each x[n] over all its axes but the first: [N]."""
  flat = jnp.reshape(x, (x.shape[0], -1))
  return jnp.linalg.norm(flat, ord=order, axis=1)


def clip_to_box(x: jax.Array) -> jax.Array:
  """Clips to the image box [0, 1]."""
  return jnp.clip(x, PIXEL_MIN, PIXEL_MAX)


def project_linf(adv: jax.Array, images: jax.Array, eps: float | jax.Array) -> jax.Array:
  """Projection onto {x : ||x - images||_inf <= eps, 0 <= x <= 1}.

  clip(clip(adv, images - eps, images + eps), 0, 1), elementwise.

  Args:
    adv: the points to project, any shape.
    images: the centres of the balls, the shape of `adv`, in [0, 1].
    eps: the radius, a scalar or an array broadcastable to `images`' shape.

  Returns:
    The projected points, in `adv`'s shape and dtype.
  """
  inside_ball = jnp.clip(adv, images - eps, images + eps)
  return clip_to_box(inside_ball).astype(adv.dtype)


def project_l2(adv: jax.Array, images: jax.Array, eps: float | jax.Array) -> jax.Array:
  """Projection onto the L2 ball {x : ||x[n] - images[n]||_2 <= eps}, then clipping to [0, 1].

  delta = adv - images is rescaled per example by min(1, eps / ||delta[n]||_2), the norm taken over
  all axes but the first; the result is then clipped to [0, 1] (which stays in the ball).

  Args:
    adv: the points to project, [N, ...].
    images: the centres of the balls, the shape of `adv`, in [0, 1].
    eps: the radius, a scalar or an array of shape [N] (one radius per example).

  Returns:
    The projected points, in `adv`'s shape and dtype.
  """
  delta = adv - images
  norm = per_example_norm(delta, order=2)
  scale = jnp.minimum(1.0, eps / jnp.maximum(norm, NORM_FLOOR))
  return clip_to_box(images + per_example(scale, delta) * delta).astype(adv.dtype)


def random_linf_start(key: jax.Array, images: jax.Array, eps: float | jax.Array) -> jax.Array:
  """A uniform random point of the L-inf ball, clipped to [0, 1] (Madry et al. 2018).

  images + eps * u, u ~ U[-1, 1] i.i.d. per coordinate, then clipped to [0, 1].

  Args:
    key: PRNG key.
    images: the centres, any shape, in [0, 1].
    eps: the radius, a scalar or an array broadcastable to `images`' shape.
  """
  noise = jax.random.uniform(key, images.shape, images.dtype, minval=-1.0, maxval=1.0)
  return clip_to_box(images + eps * noise).astype(images.dtype)


def random_l2_start(key: jax.Array, images: jax.Array, eps: float | jax.Array) -> jax.Array:
  """A uniform random point of each example's L2 ball, clipped to [0, 1].

  delta = eps * u^(1/d) * g / ||g||_2 with g ~ N(0, I) and u ~ U[0, 1] per example, d the number
  of coordinates per example: uniform in the d-dimensional ball (a uniform direction, and a radius
  with the ball's volume distribution).

  Args:
    key: PRNG key.
    images: the centres, [N, ...], in [0, 1].
    eps: the radius, a scalar or an array of shape [N].
  """
  direction_key, radius_key = jax.random.split(key)
  direction = jax.random.normal(direction_key, images.shape, images.dtype)
  direction /= per_example(jnp.maximum(per_example_norm(direction, order=2), NORM_FLOOR), images)
  dims = images[0].size
  radius = eps * jax.random.uniform(radius_key, images.shape[:1], images.dtype) ** (1.0 / dims)
  return clip_to_box(images + per_example(radius, images) * direction).astype(images.dtype)
