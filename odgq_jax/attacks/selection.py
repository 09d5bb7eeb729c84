"""Which adversarial an iterative attack returns, per example, and the loop over restarts.

Every evaluated iterate (of every restart) is a candidate; per example the attack keeps
  * the first candidate that is misclassified, if any candidate is, otherwise
  * the candidate with the highest attack loss.
The kept point is thus always adversarial when any candidate was, and the remaining ones are the
strongest the attack found. `Incumbent` carries this choice through `lax` loops.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from odgq_jax.attacks.losses import is_misclassified
from odgq_jax.attacks.projection import per_example


class Incumbent(NamedTuple):
  """The candidate kept so far for each example.

  Attributes:
    images: the kept points, [N, ...].
    loss: their attack losses, [N] (-inf before the first candidate).
    misclassified: whether each kept point is misclassified, [N] bool.
  """
  images: jax.Array
  loss: jax.Array
  misclassified: jax.Array


def no_incumbent(images: jax.Array) -> Incumbent:
  """The state before any candidate: loss -inf, not misclassified (`images` fixes the shapes)."""
  batch = images.shape[0]
  return Incumbent(images, jnp.full((batch,), -jnp.inf, images.dtype), jnp.zeros((batch,), bool))


def keep_better(incumbent: Incumbent, candidates: jax.Array, loss: jax.Array,
                logits: jax.Array, labels: jax.Array) -> Incumbent:
  """Per example, replaces the incumbent by the candidate if the candidate is better.

  A candidate is better if it is misclassified and the incumbent is not, or if neither is and its
  loss is higher. A misclassified incumbent is never replaced (the first adversarial is kept).

  Args:
    incumbent: the points kept so far.
    candidates: new points, the shape of `incumbent.images`.
    loss: their attack losses, [N].
    logits: their logits, [N, K].
    labels: the true labels, [N].
  """
  misclassified = is_misclassified(logits, labels)
  better = ~incumbent.misclassified & (misclassified | (loss > incumbent.loss))
  return Incumbent(
      images=jnp.where(per_example(better, candidates), candidates, incumbent.images),
      loss=jnp.where(better, loss, incumbent.loss),
      misclassified=incumbent.misclassified | misclassified)


def best_over_restarts(run_restart: Callable[[jax.Array, Incumbent], Incumbent],
                       images: jax.Array, key: jax.Array, num_restarts: int) -> jax.Array:
  """Runs `run_restart(key_r, incumbent)` for r = 0 .. num_restarts - 1 and returns the kept points.

  Restart r gets the key `fold_in(key, r)` and the incumbent left by the restarts before it, so
  the result follows the rule of this module over the candidates of all restarts.
  """

  def body(restart, incumbent):
    return run_restart(jax.random.fold_in(key, restart), incumbent)

  return jax.lax.fori_loop(0, num_restarts, body, no_incumbent(images)).images
