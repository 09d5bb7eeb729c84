"""Square attack, L-inf: a score-based random search that calls the model, never its gradient.

Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box adversarial attack via
random search". With m(x) = z_y - max_{j != y} z_j the true class margin of `losses` (m < 0 iff
misclassified), per example:
  1. x_0 = clip(x + delta, 0, 1) with vertical stripes: delta[h, w, c] = eps * s[w, c],
     s uniform in {-1, +1} (one query).
  2. At iteration i (one query each), a square window of side
       s_i = round(sqrt(p_i * H * W)), clipped to [1, min(H, W) - 1],
     at a uniform random position gets, per channel, a uniform random value of {-eps, +eps}
     (the rest of the image is kept); the proposal is accepted iff it lowers m.
     p_i = p_init / 2^h, h the number of the halving points 10, 50, 200, 500, 1000, 2000, 4000,
     6000, 8000 below floor(10000 i / num_queries) (the paper's schedule for 10,000 queries,
     rescaled to the budget).
  3. Examples with m < 0 are no longer updated; the loop ends when all are misclassified or after
     num_queries - 1 iterations.
As in the paper, a proposal that would leave the window unchanged (a window already at the drawn
signs) is not queried: it is replaced by a uniform draw among the other sign vectors, which is the
distribution of the paper's redrawing until the window changes.

The attack starts from the stripes, not the clean image, for every example (clean misclassified
ones included). Cost: at most num_queries forward passes over the batch.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from odgq_jax.attacks.losses import LogitsFn, true_class_margin
from odgq_jax.attacks.projection import DEFAULT_EPS, clip_to_box, per_example

SCHEDULE_QUERIES = 10000
HALVING_POINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)

# The sign redraw encodes a random non-empty subset of the channels in the bits of an int32.
MAX_CHANNELS = 30


@dataclasses.dataclass(frozen=True)
class SquareSettings:
  """Options of the Square attack (see the module docstring).

  Attributes:
    eps: L-inf radius.
    num_queries: the budget of forward passes per example (>= 2), the initialisation included.
    p_init: the initial fraction of the image covered by the square.
  """
  eps: float = DEFAULT_EPS
  num_queries: int = 1000
  p_init: float = 0.8

  def __post_init__(self):
    if self.num_queries < 2:
      raise ValueError(f"square: num_queries must be at least 2, got {self.num_queries}")
    if not 0 < self.p_init <= 1:
      raise ValueError(f"square: p_init must be in (0, 1], got {self.p_init}")


def square_side_lengths(num_queries: int, p_init: float, height: int, width: int) -> np.ndarray:
  """The side s_i of the square at iterations i = 0 .. num_queries - 2: int array."""
  rescaled = np.arange(num_queries - 1) * SCHEDULE_QUERIES // num_queries
  halvings = np.searchsorted(HALVING_POINTS, rescaled, side="left")
  fractions = p_init / 2.0 ** halvings
  sides = np.round(np.sqrt(fractions * height * width)).astype(np.int32)
  return np.clip(sides, 1, min(height, width) - 1)


def _propose(key: jax.Array, images: jax.Array, adv: jax.Array, side: jax.Array,
             eps: float) -> jax.Array:
  """Sets a random side x side window of each `adv` to clip(images +- eps) (see the docstring)."""
  batch, height, width, channels = images.shape
  top_key, left_key, sign_key, redraw_key = jax.random.split(key, 4)
  top = jax.random.randint(top_key, (batch, 1, 1), 0, height - side + 1)
  left = jax.random.randint(left_key, (batch, 1, 1), 0, width - side + 1)
  rows = jnp.arange(height)[None, :, None]
  cols = jnp.arange(width)[None, None, :]
  window = ((rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side))[..., None]

  def window_unchanged_by(sign):
    """[N, C]: whether setting the window of channel c to clip(images + sign * eps) is a no-op."""
    same = clip_to_box(images + sign * eps) == adv
    return jnp.all(same | ~window, axis=(1, 2))

  unchanged_by_plus, unchanged_by_minus = window_unchanged_by(1.0), window_unchanged_by(-1.0)
  # Where the window is a fixed point, the only signs that leave it unchanged.
  fixed_signs = jnp.where(unchanged_by_plus, 1.0, -1.0).astype(images.dtype)
  can_stay = jnp.all(unchanged_by_plus | unchanged_by_minus, axis=1)
  signs = jax.random.rademacher(sign_key, (batch, channels), images.dtype)
  no_op = can_stay & jnp.all(signs == fixed_signs, axis=1)
  subset = jax.random.randint(redraw_key, (batch, 1), 1, 2 ** channels)
  flip = (jnp.right_shift(subset, jnp.arange(channels)) & 1).astype(bool)
  redrawn = jnp.where(flip, -fixed_signs, fixed_signs)
  signs = jnp.where(no_op[:, None], redrawn, signs)
  return jnp.where(window, clip_to_box(images + eps * signs[:, None, None, :]), adv)


def square(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array, key: jax.Array,
           settings: SquareSettings) -> jax.Array:
  """Square attack, L-inf (see the module docstring); calls `logits_fn` only, no gradients.

  Args:
    logits_fn: images [N, H, W, C] in [0, 1] -> logits [N, K].
    images: clean images [N, H, W, C] in [0, 1], H, W >= 2.
    labels: int labels [N].
    key: PRNG key.
    settings: the options.

  Returns:
    Adversarial images, the shape and dtype of `images`.

  Raises:
    ValueError: for images that are not [N, H, W, C] with H, W >= 2 and C <= 30.
  """
  if images.ndim != 4 or min(images.shape[1:3]) < 2 or images.shape[3] > MAX_CHANNELS:
    raise ValueError(f"square: images must be [N, H, W, C] with H, W >= 2 and C <= "
                     f"{MAX_CHANNELS}, got shape {images.shape}")
  batch, height, width, channels = images.shape
  eps = settings.eps
  sides = jnp.asarray(square_side_lengths(settings.num_queries, settings.p_init, height, width))
  stripes_key, search_key = jax.random.split(key)
  stripes = jax.random.rademacher(stripes_key, (batch, 1, width, channels), images.dtype)
  start = clip_to_box(images + eps * stripes).astype(images.dtype)
  start_margin = true_class_margin(logits_fn(start), labels)

  def not_done(state):
    iteration, _, margin = state
    return (iteration < sides.shape[0]) & jnp.any(margin >= 0)

  def search_step(state):
    iteration, adv, margin = state
    proposal = _propose(jax.random.fold_in(search_key, iteration), images, adv,
                        sides[iteration], eps)
    proposal_margin = true_class_margin(logits_fn(proposal), labels)
    accept = (margin >= 0) & (proposal_margin < margin)
    return (iteration + 1, jnp.where(per_example(accept, adv), proposal, adv),
            jnp.where(accept, proposal_margin, margin))

  _, adv, _ = jax.lax.while_loop(not_done, search_step, (0, start, start_margin))
  return adv
