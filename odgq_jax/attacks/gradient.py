"""Gradient attacks: FGSM, PGD (with CW-inf and PGD++ as options), MIM and DI-MI-FGSM.

All of them are one loop, `projected_gradient_ascent`: from x_0 (the image, or a random point of
the ball), for t = 0 .. T - 1,
  g_t     = grad_x loss(logits_fn(D_t(x_t)), y)            D_t = identity or input diversity,
  m_{t+1} = mu * m_t + g_t / ||g_t||_1                      (m_0 = 0),
  x_{t+1} = P(x_t + alpha * u(m_{t+1})),
with u(m) = sign(m) for L-inf and m / ||m||_2 for L2, and P the projection onto the eps-ball
intersected with [0, 1]. Norms are per example. With mu = 0 the direction is that of g_t, so
this is PGD; with mu > 0 it is MIM. The adversarial-training methods craft their training inputs
with the same loop (`methods.adversarial.sign_gradient_ascent`: L-inf, mu = 0, their own
objective).

| attack     | x_0    | alpha     | mu  | loss; D_t                     | paper                  |
|------------|--------|-----------|-----|-------------------------------|------------------------|
| FGSM       | x      | eps       | 0   | CE; T = 1                     | Goodfellow et al. 2015 |
| PGD        | random | step_size | 0   | CE, CW or DLR                 | Madry et al. 2018      |
| CW-inf     | random | step_size | 0   | CW                            | Carlini & Wagner 2017  |
| PGD++      | random | step_size | 0   | CE of beta * logits           | Gupta & Ajanthan 2022  |
| MIM        | x      | eps / T   | 1.0 | CE                            | Dong et al. 2018       |
| DI-MI-FGSM | x      | eps / T   | 1.0 | CE; input diversity, p = 0.5  | Xie et al. 2019        |

Which point is returned is decided by `selection`: with `track_every_step` every iterate x_0 ..
x_T of every restart is a candidate, otherwise only each restart's final iterate x_T.

Cost per restart, in passes over the batch: T forward+backward, plus 1 forward for x_T unless
it is the only candidate (one restart, `track_every_step` off: FGSM costs exactly one
forward+backward), plus T forwards when both input diversity and `track_every_step` are on (the
candidates are judged on the untransformed iterates). PGD++ with temperature "auto" adds one
forward on the clean images.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from odgq_jax.attacks.diversity import input_diversity
from odgq_jax.attacks.losses import LOSSES, LogitsFn, check_loss_name
from odgq_jax.attacks.projection import (DEFAULT_EPS, NORM_FLOOR, per_example, per_example_norm,
                                         project_l2, project_linf, random_l2_start,
                                         random_linf_start)
from odgq_jax.attacks.selection import best_over_restarts, keep_better, no_incumbent

# norm name -> (projection, random start).
NORMS = {
    "linf": (project_linf, random_linf_start),
    "l2": (project_l2, random_l2_start),
}


@dataclasses.dataclass(frozen=True)
class FGSMSettings:
  """Options of FGSM: x + eps * sign(grad_x CE), clipped to [0, 1].

  Attributes:
    eps: L-inf radius.
  """
  eps: float = DEFAULT_EPS


@dataclasses.dataclass(frozen=True)
class PGDSettings:
  """Options of PGD, of CW-inf (loss "cw") and of PGD++ (temperature "auto").

  PGD: Madry et al. 2018, "Towards deep learning models resistant to adversarial attacks".
  PGD++ (Gupta & Ajanthan 2022, "Improved gradient-based adversarial attacks for quantized
  networks") attacks softmax(beta * z) instead of softmax(z): binary networks often have saturated
  softmax outputs whose cross-entropy gradient vanishes, and a positive beta keeps the decision
  boundary. Their variants choose beta from Jacobian or Hessian norms; this is the simple one,
  beta chosen so that the scaled softmax is neither saturated nor flat. With temperature "auto",
  per example, from the logits z of the clean image and with spread = max_j z_j - min_j z_j,
    beta = log((1 - q) (K - 1) / q) / spread      (beta = 1 if spread = 0),
  held fixed through all steps and restarts. The scaled clean logits then span exactly
  log((1 - q)(K - 1) / q), so the top class probability is at most 1 - q (not saturated) and the
  largest probability is (1 - q)(K - 1) / q times the smallest (891 for K = 10 and q = 0.01: not
  flat). A number T as temperature fixes beta = 1 / T for all examples.

  Attributes:
    eps: radius of the ball.
    step_size: alpha, the length of each step in the norm of the ball.
    num_steps: T, the number of gradient steps per restart.
    num_restarts: number of runs from independent random starts.
    norm: "linf" (sign steps) or "l2" (L2-normalised steps).
    loss: "ce", "cw" (CW-inf) or "dlr" (see `losses`).
    random_start: start from a uniform random point of the ball (else from the image).
    temperature: T > 0, the logits are divided by it, or "auto" for the PGD++ rule above.
    softmax_off_top_mass: q, the probability the "auto" scaled softmax leaves off the top class
      at least.
    track_every_step: every iterate is a candidate (else only each restart's final one).
  """
  eps: float = DEFAULT_EPS
  step_size: float = 2 / 255
  num_steps: int = 20
  num_restarts: int = 1
  norm: str = "linf"
  loss: str = "ce"
  random_start: bool = True
  temperature: float | str = 1.0
  softmax_off_top_mass: float = 0.01
  track_every_step: bool = True

  def __post_init__(self):
    if self.norm not in NORMS:
      raise ValueError(f"pgd: norm must be one of {sorted(NORMS)}, got {self.norm!r}")
    check_loss_name(self.loss, "pgd")
    if isinstance(self.temperature, str):
      if self.temperature != "auto":
        raise ValueError(f"pgd: temperature must be a positive number or 'auto', got "
                         f"{self.temperature!r}")
    elif not self.temperature > 0:
      raise ValueError(f"pgd: temperature must be positive, got {self.temperature!r}")


@dataclasses.dataclass(frozen=True)
class MIMSettings:
  """Options of MIM and, with diversity_probability > 0, of DI-MI-FGSM.

  MIM: Dong et al. 2018, "Boosting adversarial attacks with momentum". DI-MI-FGSM: Xie et al.
  2019, "Improving transferability of adversarial examples with input diversity" (see
  `diversity`).

  The step size is eps / num_steps, so that num_steps steps in one direction reach the boundary
  of the ball.

  Attributes:
    eps: L-inf radius.
    num_steps: T, the number of gradient steps.
    decay: mu, the decay of the accumulated normalised gradient.
    loss: "ce", "cw" or "dlr" (see `losses`).
    diversity_probability: p, the probability of the input diversity transform at each step.
    resize_factor: the largest resize of the input diversity transform, relative to the input.
    track_every_step: every iterate is a candidate (else only the final one).
  """
  eps: float = DEFAULT_EPS
  num_steps: int = 10
  decay: float = 1.0
  loss: str = "ce"
  diversity_probability: float = 0.0
  resize_factor: float = 1.1
  track_every_step: bool = True

  def __post_init__(self):
    check_loss_name(self.loss, "mim")

  @property
  def step_size(self) -> float:
    """alpha = eps / num_steps."""
    return self.eps / self.num_steps


def temperature_scaled(logits_fn: LogitsFn, images: jax.Array, temperature: float | str,
                       softmax_off_top_mass: float) -> LogitsFn:
  """`logits_fn` with its logits multiplied by beta (see `PGDSettings` for the PGD++ rule).

  Args:
    logits_fn: the model.
    images: the clean images [N, ...]; "auto" sets beta per example from their logits, so the
      returned function must be called on batches of these N examples in this order.
    temperature: T > 0 (beta = 1 / T) or "auto".
    softmax_off_top_mass: q of the "auto" rule.
  """
  if temperature != "auto":
    return lambda x: logits_fn(x) / temperature
  clean_logits = jax.lax.stop_gradient(logits_fn(images))
  num_classes = clean_logits.shape[-1]
  spread = jnp.max(clean_logits, axis=1) - jnp.min(clean_logits, axis=1)
  scaled_spread = jnp.log((1 - softmax_off_top_mass) * (num_classes - 1) / softmax_off_top_mass)
  beta = jnp.where(spread > 0, scaled_spread / spread, 1.0)
  return lambda x: logits_fn(x) * beta[:, None]


def projected_gradient_ascent(
    objective: Callable[[jax.Array, jax.Array], tuple[jax.Array, Any]], images: jax.Array,
    start: jax.Array, *, eps: float | jax.Array, step_size: float, num_steps: int,
    norm: str = "linf", decay: float = 0.0,
    track: Callable[[jax.Array, jax.Array, Any, Any], Any] | None = None, tracked: Any = None,
    unroll: bool = False) -> tuple[jax.Array, Any]:
  """The loop of the module docstring: x_T from x_0 = `start`, and what `track` kept on the way.

  Args:
    objective: (t, x_t) -> (J(x_t), aux): the scalar whose gradient in x_t is g_t (a sum over the
      batch of per-example terms, so that g_t[n] is example n's gradient), and anything the
      forward pass computed that `track` needs.
    images: the centres of the balls x [N, ...], in [0, 1].
    start: x_0, the shape of `images`, taken as it is (not projected).
    eps: the radius.
    step_size: alpha.
    num_steps: T.
    norm: "linf" or "l2", the ball and the step direction u.
    decay: mu (0: PGD).
    track: (t, x_t, aux, tracked) -> tracked, called on each iterate x_0 .. x_{T-1} with the aux
      of its gradient's forward pass (the attacks keep their best candidate this way), or None.
    tracked: the initial value `track` updates.
    unroll: trace the T steps as straight-line code (adversarial training's few crafting steps)
      instead of a loop (the attacks' up to a hundred).

  Returns:
    x_T, and the final `tracked`.
  """
  project = NORMS[norm][0]

  def ascent_direction(momentum):
    if norm == "linf":
      return jnp.sign(momentum)
    return momentum / per_example(
        jnp.maximum(per_example_norm(momentum, order=2), NORM_FLOOR), momentum)

  def step(t, carry):
    adv, momentum, tracked = carry
    gradient, aux = jax.grad(objective, argnums=1, has_aux=True)(t, adv)
    if track is not None:
      tracked = track(t, adv, aux, tracked)
    gradient_l1 = jnp.maximum(per_example_norm(gradient, order=1), NORM_FLOOR)
    momentum = decay * momentum + gradient / per_example(gradient_l1, gradient)
    adv = project(adv + step_size * ascent_direction(momentum), images, eps)
    return adv, momentum, tracked

  final, _, tracked = jax.lax.fori_loop(
      0, num_steps, step, (start, jnp.zeros_like(images), tracked), unroll=unroll)
  return final, tracked


def _iterative_attack(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array,
                      key: jax.Array, *, eps: float, step_size: float, num_steps: int,
                      num_restarts: int, norm: str, loss: str, random_start: bool,
                      decay: float, diversity_probability: float, resize_factor: float,
                      track_every_step: bool) -> jax.Array:
  """`projected_gradient_ascent` with restarts and the choice of `selection`; arguments as in the
  settings classes."""
  loss_fn = LOSSES[loss]
  random_start_fn = NORMS[norm][1]

  def evaluate(adv):
    logits = logits_fn(adv)
    return loss_fn(logits, labels), logits

  def iterate(restart_key, incumbent):
    """Runs T steps from a start drawn with `restart_key`: (x_T, incumbent)."""
    start_key, diversity_key = jax.random.split(restart_key)
    start = random_start_fn(start_key, images, eps) if random_start else images

    def objective(t, adv):
      if diversity_probability > 0:
        adv = input_diversity(jax.random.fold_in(diversity_key, t), adv, diversity_probability,
                              resize_factor)
      losses, logits = evaluate(adv)
      return jnp.sum(losses), (losses, logits)

    def track(t, adv, aux, incumbent):
      del t
      # With input diversity the gradient's forward pass saw a transformed image; candidates are
      # judged untransformed.
      losses, logits = evaluate(adv) if diversity_probability > 0 else aux
      return keep_better(incumbent, adv, losses, logits, labels)

    return projected_gradient_ascent(
        objective, images, start, eps=eps, step_size=step_size, num_steps=num_steps, norm=norm,
        decay=decay, track=track if track_every_step else None, tracked=incumbent)

  if num_restarts == 1 and not track_every_step:
    return iterate(jax.random.fold_in(key, 0), no_incumbent(images))[0]

  def run_restart(restart_key, incumbent):
    final, incumbent = iterate(restart_key, incumbent)
    return keep_better(incumbent, final, *evaluate(final), labels)

  return best_over_restarts(run_restart, images, key, num_restarts)


def fgsm(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array, key: jax.Array,
         settings: FGSMSettings) -> jax.Array:
  """FGSM (Goodfellow et al. 2015, "Explaining and harnessing adversarial examples").

  clip(x + eps * sign(grad_x CE(logits_fn(x), y)), 0, 1); one forward+backward pass.

  Args:
    logits_fn: images [N, ...] in [0, 1] -> logits [N, K].
    images: clean images [N, ...] in [0, 1].
    labels: int labels [N].
    key: PRNG key (unused: FGSM is deterministic; kept for the common attack signature).
    settings: the options.

  Returns:
    Adversarial images, the shape and dtype of `images`.
  """
  return _iterative_attack(
      logits_fn, images, labels, key, eps=settings.eps, step_size=settings.eps, num_steps=1,
      num_restarts=1, norm="linf", loss="ce", random_start=False, decay=0.0,
      diversity_probability=0.0, resize_factor=1.0, track_every_step=False)


def pgd(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array, key: jax.Array,
        settings: PGDSettings) -> jax.Array:
  """PGD with random start and restarts; CW-inf with loss "cw", PGD++ with temperature "auto".

  See `PGDSettings` and the module docstring for the update and the cost.

  Args:
    logits_fn: images [N, ...] in [0, 1] -> logits [N, K].
    images: clean images [N, ...] in [0, 1].
    labels: int labels [N].
    key: PRNG key of the random starts.
    settings: the options.

  Returns:
    Adversarial images, the shape and dtype of `images`.
  """
  scaled_logits_fn = temperature_scaled(logits_fn, images, settings.temperature,
                                        settings.softmax_off_top_mass)
  return _iterative_attack(
      scaled_logits_fn, images, labels, key, eps=settings.eps, step_size=settings.step_size,
      num_steps=settings.num_steps, num_restarts=settings.num_restarts, norm=settings.norm,
      loss=settings.loss, random_start=settings.random_start, decay=0.0,
      diversity_probability=0.0, resize_factor=1.0,
      track_every_step=settings.track_every_step)


def mim(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array, key: jax.Array,
        settings: MIMSettings) -> jax.Array:
  """MIM, momentum iterative FGSM, and with input diversity DI-MI-FGSM.

  See `MIMSettings` and the module docstring for the update and the cost.

  Args:
    logits_fn: images [N, H, W, C] in [0, 1] -> logits [N, K].
    images: clean images [N, H, W, C] in [0, 1].
    labels: int labels [N].
    key: PRNG key of the input diversity transforms.
    settings: the options.

  Returns:
    Adversarial images, the shape and dtype of `images`.
  """
  return _iterative_attack(
      logits_fn, images, labels, key, eps=settings.eps, step_size=settings.step_size,
      num_steps=settings.num_steps, num_restarts=1, norm="linf", loss=settings.loss,
      random_start=False, decay=settings.decay,
      diversity_probability=settings.diversity_probability,
      resize_factor=settings.resize_factor, track_every_step=settings.track_every_step)
