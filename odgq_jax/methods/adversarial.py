"""Pieces shared by the adversarial-training baselines: crafting, replays and option checks.

Crafting. PGD-AT, FGSM-RS, TRADES (and DQ's adversarial option) train on inputs crafted against
the network being trained by L-inf projected sign-gradient ascent on an objective J, from a start
x_0 in the ball:

  x_{t+1} = P(x_t + alpha * sign(grad_x J(x_t))),   t = 0 .. K - 1,

with P the projection onto {x : ||x - x0||_inf <= eps} intersected with the image box [0, 1]
(`attacks.projection.project_linf`), and x_K returned under `stop_gradient`: the training loss
treats it as data.

| method  | x_0                 | J                 | alpha  | K  | paper                    |
|---------|---------------------|-------------------|--------|----|--------------------------|
| PGD-AT  | uniform in the ball | CE(f(x), y)       | 2/255  | 10 | Madry et al. 2018        |
| FGSM-RS | uniform in the ball | CE(f(x), y)       | 10/255 | 1  | Wong, Rice & Kolter 2020 |
| TRADES  | x0 + 0.001 N(0, I)  | KL(p(x0) || p(x)) | 2/255  | 10 | Zhang et al. 2019        |

f is the network in train mode with the current parameters (batch statistics, running statistics
untouched; `base.train_mode_logits_fn`), as in Wong et al.'s FGSM-RS code and the usual PyTorch
PGD-AT code. The loop is the attacks' (`attacks.gradient.projected_gradient_ascent` with mu = 0),
traced as straight-line code since K is small and static; crafting costs K forward+backward
passes (input gradients only).

Replays. Free-AT replays each minibatch m times, one optimizer update per replay, in a loop unrolled
the same way (`replay_minibatch`), as ODG-Q does.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import jax
import jax.numpy as jnp

from odgq_jax.attacks import gradient
from odgq_jax.attacks import projection
from odgq_jax.attacks.losses import LogitsFn
from odgq_jax.methods import base
from odgq_jax.train_state import TrainState

Carry = TypeVar("Carry")


def sign_gradient_ascent(objective: Callable[[jax.Array], jax.Array], images: jax.Array,
                         start: jax.Array, *, eps: float, step_size: float,
                         num_steps: int) -> jax.Array:
  """x_K of x_{t+1} = P(x_t + alpha sign(grad J(x_t))), from x_0 = P(start); see the module doc.

  Args:
    objective: J, adversarial images [N, ...] -> the scalar to maximise (a sum or mean over the
      batch of per-example terms).
    images: the clean images x0 [N, ...] in [0, 1], the centres of the balls.
    start: the starting point, the shape of `images`; projected onto the ball and box first.
    eps: L-inf radius.
    step_size: alpha.
    num_steps: K.

  Returns:
    x_K, in the eps-ball around `images` and in [0, 1], without gradient.
  """
  adversarial, _ = gradient.projected_gradient_ascent(
      lambda _, x: (objective(x), None), images, projection.project_linf(start, images, eps),
      eps=eps, step_size=step_size, num_steps=num_steps, unroll=True)
  return jax.lax.stop_gradient(adversarial)


def pgd_examples(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array, key: jax.Array, *,
                 eps: float, step_size: float, num_steps: int) -> jax.Array:
  """PGD on sum_n CE(f(x_n), y_n) from a uniform random start in the ball (PGD-AT, FGSM-RS).

  Args:
    logits_fn: f, images -> logits [N, K] (the train-mode network, `base.train_mode_logits_fn`).
    images: clean images [N, ...] in [0, 1].
    labels: int labels [N].
    key: PRNG key of the random start.
    eps: L-inf radius.
    step_size: alpha.
    num_steps: K (1: FGSM from a random start).

  Returns:
    The adversarial images, in the eps-ball and in [0, 1], without gradient.
  """
  objective = lambda x: jnp.sum(base.cross_entropy(logits_fn(x), labels))
  return sign_gradient_ascent(objective, images, projection.random_linf_start(key, images, eps),
                              eps=eps, step_size=step_size, num_steps=num_steps)


def pgd_training_update(state: TrainState, batch: base.Batch, key: jax.Array, *, eps: float,
                        step_size: float, num_steps: int, label_smoothing: float,
                        regularizer: Callable[[Any], jax.Array] | None = None,
                        ) -> tuple[TrainState, base.StepOutput]:
  """One optimizer update on CE(f(x_adv), y) [+ regularizer], x_adv from `pgd_examples`.

  Costs K + 1 forward+backward passes (K for crafting, one for the update).
  """
  adversarial = pgd_examples(base.train_mode_logits_fn(state), batch["image"], batch["label"], key,
                             eps=eps, step_size=step_size, num_steps=num_steps)
  state, output, _ = base.gradient_update(state, adversarial, batch["label"], label_smoothing,
                                          regularizer)
  return state, output


def replay_minibatch(replay: Callable[[Carry, Any], tuple[Carry, base.StepOutput]], carry: Carry,
                     num_replays: int, xs: Any = None) -> tuple[Carry, base.StepOutput]:
  """Runs `replay` m times (one optimizer update each, the state in `carry`).

  The loop is a Python loop, unrolled when traced, for the reasons given for crafting in the module
  doc.

  Args:
    replay: (carry, x) -> (carry, step output of this replay).
    carry: the initial carry, holding the train state.
    num_replays: m.
    xs: per-replay inputs with leading axis m (e.g. PRNG keys), or None.

  Returns:
    The final carry, and the minibatch's step output: the mean loss over the m replays and the
    logits of the last one.
  """
  losses = []
  for index in range(num_replays):
    carry, output = replay(carry, None if xs is None else jax.tree.map(lambda x: x[index], xs))
    losses.append(output.loss)
  return carry, base.StepOutput(jnp.mean(jnp.stack(losses)), output.logits)


def _is_number(value: Any) -> bool:
  """An int or a float; not a bool, and not a string such as a command line's "1/255"."""
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_radius_and_step(method: str, eps: float, step_size: float) -> None:
  """Raises ValueError unless eps and step_size are numbers in (0, 1] (pixels are in [0, 1])."""
  for name, value in (("eps", eps), ("step_size", step_size)):
    if not _is_number(value) or not 0 < value <= 1:
      raise ValueError(f"{method}: {name} must be in (0, 1], got {value!r}")


def check_count(method: str, name: str, value: int, minimum: int = 1) -> None:
  """Raises ValueError unless `value` is an integer >= `minimum`."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"{method}: {name} must be an integer >= {minimum}, got {value!r}")


def check_nonnegative(method: str, name: str, value: float) -> None:
  """Raises ValueError unless `value` is a number >= 0."""
  if not _is_number(value) or not value >= 0:
    raise ValueError(f"{method}: {name} must be a number >= 0, got {value!r}")


def check_flag(method: str, name: str, value: bool) -> None:
  """Raises ValueError unless `value` is True or False (not a string such as "no")."""
  if not isinstance(value, bool):
    raise ValueError(f"{method}: {name} must be True or False, got {value!r}")
