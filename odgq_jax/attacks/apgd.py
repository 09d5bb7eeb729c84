"""APGD: the step-size-free projected gradient ascent of AutoAttack (L-inf), with CE or DLR loss.

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", Algorithm 1. With f the per-example loss, P the projection onto the
eps-ball intersected with [0, 1], x^(0) a uniform random point of the ball and eta^(0) = 2 eps:
  z^(k+1) = P(x^(k) + eta^(k) sign(grad f(x^(k))))
  x^(k+1) = P(x^(k) + alpha (z^(k+1) - x^(k)) + (1 - alpha)(x^(k) - x^(k-1)))
with alpha = 1 for the first step (x^(1) = z^(1)) and alpha = 0.75 after. f_max and x_max are
the highest loss seen and where (per example). At the checkpoints w_j = ceil(p_j N) of the N
iterations, p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), the step size
of an example is halved and its iterate reset to x_max (x^(k) is kept for the momentum term) if
  (1) the loss increased, f(x^(i+1)) > f(x^(i)), in fewer than rho (w_j - w_{j-1}) of the steps
      i = w_{j-1} .. w_j - 1 (rho = 0.75), or
  (2) the step size was not halved at w_{j-1} and f_max has not grown since w_{j-1}.
Restarts (independent random starts) keep the per-example choice of `selection` over all
iterates x^(0) .. x^(N) of all restarts.

Cost: N + 1 forward+backward passes per restart.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from odgq_jax.attacks.losses import LOSSES, LogitsFn, check_loss_name, loss_and_input_gradient
from odgq_jax.attacks.projection import DEFAULT_EPS, per_example, project_linf, random_linf_start
from odgq_jax.attacks.selection import Incumbent, best_over_restarts, keep_better

# The checkpoint fractions p_j, in hundredths to keep the schedule arithmetic exact.
FIRST_CHECKPOINT_PERCENT = 22
INTERVAL_DECREASE_PERCENT = 3
MIN_INTERVAL_PERCENT = 6

INITIAL_STEP_SIZE_IN_EPS = 2.0


@dataclasses.dataclass(frozen=True)
class APGDSettings:
  """Options of APGD (see the module docstring).

  Attributes:
    eps: L-inf radius.
    num_steps: N, the number of iterations per restart.
    loss: "ce" (APGD-CE), "dlr" (APGD-DLR, needs >= 3 classes) or "cw".
    num_restarts: number of runs from independent random starts.
    momentum: alpha, the weight of the new gradient step against the previous step.
    rho: the fraction of loss-increasing steps below which the step size is halved.
  """
  eps: float = DEFAULT_EPS
  num_steps: int = 100
  loss: str = "ce"
  num_restarts: int = 1
  momentum: float = 0.75
  rho: float = 0.75

  def __post_init__(self):
    check_loss_name(self.loss, "apgd")


def checkpoints(num_steps: int) -> list[int]:
  """The distinct checkpoints w_j = ceil(p_j N), j >= 1 with p_j <= 1, increasing.

  For N = 100: [22, 41, 57, 70, 80, 87, 93, 99].
  """
  percents = [0, FIRST_CHECKPOINT_PERCENT]
  while True:
    interval = max(percents[-1] - percents[-2] - INTERVAL_DECREASE_PERCENT, MIN_INTERVAL_PERCENT)
    if percents[-1] + interval > 100:
      break
    percents.append(percents[-1] + interval)
  return sorted({-(-percent * num_steps // 100) for percent in percents[1:]})


class _State(NamedTuple):
  """Per-example state of one APGD run after k steps (all leading axes are the batch)."""
  current: jax.Array            # x^(k)
  previous: jax.Array           # x^(k-1) (x^(0) when k = 0)
  gradient: jax.Array           # grad f(x^(k))
  loss: jax.Array               # f(x^(k))
  step_size: jax.Array          # eta^(k)
  best: jax.Array               # x_max
  best_gradient: jax.Array      # grad f(x_max)
  best_loss: jax.Array          # f_max
  increases: jax.Array          # loss increases since the last checkpoint
  best_loss_at_checkpoint: jax.Array
  halved_at_checkpoint: jax.Array
  incumbent: Incumbent


def apgd(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array, key: jax.Array,
         settings: APGDSettings) -> jax.Array:
  """APGD-CE or APGD-DLR (see the module docstring).

  Args:
    logits_fn: images [N, ...] in [0, 1] -> logits [N, K].
    images: clean images [N, ...] in [0, 1].
    labels: int labels [N].
    key: PRNG key of the random starts.
    settings: the options.

  Returns:
    Adversarial images, the shape and dtype of `images`.
  """
  loss_fn = LOSSES[settings.loss]
  eps = settings.eps
  # Indexed by the number of steps taken: is it a checkpoint, and how many steps since the last.
  is_checkpoint = np.zeros(settings.num_steps + 1, bool)
  steps_since_checkpoint = np.zeros(settings.num_steps + 1, np.int32)
  last = 0
  for checkpoint in checkpoints(settings.num_steps):
    is_checkpoint[checkpoint] = True
    steps_since_checkpoint[checkpoint] = checkpoint - last
    last = checkpoint

  def step(k, state):
    """Computes x^(k+1) and f there, then applies the checkpoint rule if k + 1 is one."""
    alpha = jnp.where(k == 0, 1.0, settings.momentum).astype(images.dtype)
    current = state.current
    ascent = project_linf(
        current + per_example(state.step_size, current) * jnp.sign(state.gradient), images, eps)
    new = project_linf(
        current + alpha * (ascent - current) + (1 - alpha) * (current - state.previous),
        images, eps)
    loss, logits, gradient = loss_and_input_gradient(logits_fn, loss_fn, new, labels)
    incumbent = keep_better(state.incumbent, new, loss, logits, labels)
    increases = state.increases + (loss > state.loss)
    improved = loss > state.best_loss
    best = jnp.where(per_example(improved, new), new, state.best)
    best_gradient = jnp.where(per_example(improved, new), gradient, state.best_gradient)
    best_loss = jnp.where(improved, loss, state.best_loss)

    at_checkpoint = jnp.asarray(is_checkpoint)[k + 1]
    too_few_increases = increases < settings.rho * jnp.asarray(steps_since_checkpoint)[k + 1]
    stalled = ~state.halved_at_checkpoint & (best_loss <= state.best_loss_at_checkpoint)
    halve = at_checkpoint & (too_few_increases | stalled)
    restart = per_example(halve, new)
    return _State(
        current=jnp.where(restart, best, new),
        previous=current,
        gradient=jnp.where(restart, best_gradient, gradient),
        loss=jnp.where(halve, best_loss, loss),
        step_size=jnp.where(halve, state.step_size / 2, state.step_size),
        best=best,
        best_gradient=best_gradient,
        best_loss=best_loss,
        increases=jnp.where(at_checkpoint, 0, increases),
        best_loss_at_checkpoint=jnp.where(at_checkpoint, best_loss,
                                          state.best_loss_at_checkpoint),
        halved_at_checkpoint=jnp.where(at_checkpoint, halve, state.halved_at_checkpoint),
        incumbent=incumbent)

  def run_restart(restart_key, incumbent):
    start = random_linf_start(restart_key, images, eps)
    loss, logits, gradient = loss_and_input_gradient(logits_fn, loss_fn, start, labels)
    batch = images.shape[0]
    state = _State(
        current=start, previous=start, gradient=gradient, loss=loss,
        step_size=jnp.full((batch,), INITIAL_STEP_SIZE_IN_EPS * eps, images.dtype),
        best=start, best_gradient=gradient, best_loss=loss,
        increases=jnp.zeros((batch,), jnp.int32), best_loss_at_checkpoint=loss,
        halved_at_checkpoint=jnp.zeros((batch,), bool),
        incumbent=keep_better(incumbent, start, loss, logits, labels))
    return jax.lax.fori_loop(0, settings.num_steps, step, state).incumbent

  return best_over_restarts(run_restart, images, key, settings.num_restarts)
