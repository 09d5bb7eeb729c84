"""ODG-Q: robust quantization via online domain generalization (Tao & Wong, ICPR 2022).

Adversarial perturbations of several kinds are source domains; training on a mix of them, generated
online from the training's own backward pass, makes the quantized network robust to unseen attacks
(target domains) at about the cost of natural training. One replay of a minibatch (x0, y):

  1. select a domain k from the perturbation bank, for the batch or per example
     (`perturbation_bank.py`);
  2. x_adv = clip(x0 + delta_k, 0, 1), ||delta_k||_inf <= eps;
     optionally (`fresh_step_fraction` f > 0) the examples of a fraction f of the batch first take
     one sign-gradient step on the current network, x_adv <- P(x_adv + alpha_f sign(grad_x
     CE(f(x_adv), y))) (an FGSM step from the domain's perturbation, as FGSM-PGI starts from its
     prior; one extra forward and input-gradient pass on those examples); P projects onto the
     eps-ball, or (`fresh_step_projection=False`) only onto the image box, as N-FGSM's step is
     not projected (de Jorge et al. NeurIPS 2022), so the perturbation reaches eps + alpha_f;
  3. forward x0 (forward-only by default: stop-gradient; skipped when beta = 0) and x_adv;
  4. loss = CE(f(x_adv), y) + beta * Align(f(x0), f(x_adv))  (`alignment.py`; KL by default);
  5. one backward pass gives the parameter gradients and g = dLoss/dx_adv;
  6. the optimizer updates the network (quantizer parameters included) and g updates the bank.

The minibatch is replayed m = `replays` times (the local domain's per-example perturbation steps
on from each replay's perturbation, as in free adversarial training), so a run reads 1/m as many
minibatches for the same number of updates. Every choice beyond the paper's abstract and figure is
this project's and is an option here; see docs/method.md.
"""
from __future__ import annotations

import dataclasses
import fractions

import jax
import jax.numpy as jnp
import numpy as np

from odgq_jax.attacks import projection
from odgq_jax.methods import adversarial
from odgq_jax.methods import alignment
from odgq_jax.methods import base
from odgq_jax.methods import perturbation_bank as bank
from odgq_jax.methods import perturbation_memory as memory
from odgq_jax.methods.registry import register

MAX_FRESH_STEP_DENOMINATOR = 16


@register("odgq")
@dataclasses.dataclass(frozen=True)
class ODGQ(base.TrainingMethod):
  """ODG-Q training.

  Attributes:
    domains: the kind of each domain of the bank: "global", "local", "random" or "memory".
    eps: L-inf radius of every domain's perturbation.
    eps_warmup_updates: W; the radius grows linearly over the first W optimizer updates,
      eps_t = eps * min(1, (t + 1) / W) at update t, and every step size with it (alpha_t = alpha
      eps_t / eps), so the network meets full-size perturbations only once it classifies; 0 (the
      default): eps from the first update.
    global_step_sizes: alpha_k of each global domain, in the order they appear in `domains`.
    global_per_class: keep one universal perturbation per class in each global domain, each
      updated from its class's examples, instead of one for all examples.
    local_step_size: alpha of the local domain's sign-gradient step.
    local_carry_over: carry the local domain's perturbation on to the next minibatch, as free
      adversarial training does (Shafahi et al. 2019), instead of starting each minibatch's local
      domain from a uniform random point of the eps-ball. The carried perturbation (the global
      batch's image shape) then lives in the bank and its checkpoint.
    memory_step_size: alpha of the memory domain's sign-gradient step.
    memory_momentum: mu of the memory domain's momentum (0: plain sign steps).
    memory_initialization: where an example's memory starts: "uniform" in the eps-ball, or "zero".
    fresh_step_fraction: f = p/q (q <= 16), the fraction of each minibatch whose perturbation
      takes one fresh sign-gradient step on the current network before the update (step 2 of the
      module doc): the examples at positions r with r mod q < p, so that each device's shard keeps
      its share when its batch is a multiple of q. 0 (the default): none. The extra cost is about
      2/3 f of an update (a forward and an input-gradient pass on f of the batch).
    fresh_step_size: alpha_f of that step.
    fresh_step_projection: project the stepped perturbation back onto the eps-ball (the
      default); False keeps the whole step, as N-FGSM does, so the examples that take it train
      on perturbations of L-inf norm up to eps + alpha_f (the stored perturbations stay in the
      eps-ball: the memory's own step projects).
    replays: m, the optimizer updates made on each minibatch.
    selection: "uniform", "per_example" or "loss_weighted".
    selection_temperature: T of the loss-weighted selection.
    beta: weight of the alignment loss.
    alignment: "kl", "symmetric_kl" or "logit_mse".
    natural_branch_grad: backpropagate through the natural branch too (costs a second backward).
  """
  domains: tuple[str, ...] = ("global", "global", "local", "random")
  eps: float = 8 / 255
  eps_warmup_updates: int = 0
  global_step_sizes: tuple[float, ...] = (1 / 255, 4 / 255)
  local_step_size: float = 8 / 255
  local_carry_over: bool = False
  global_per_class: bool = False
  memory_step_size: float = 8 / 255
  memory_momentum: float = 0.0
  memory_initialization: str = "uniform"
  fresh_step_fraction: float = 0.0
  fresh_step_size: float = 8 / 255
  fresh_step_projection: bool = True
  replays: int = 4
  selection: str = "uniform"
  selection_temperature: float = 1.0
  beta: float = 1.0
  alignment: str = "kl"
  natural_branch_grad: bool = False

  def __post_init__(self):
    for flag in ("local_carry_over", "global_per_class", "fresh_step_projection",
                 "natural_branch_grad"):
      adversarial.check_flag("odgq", flag, getattr(self, flag))
    _check_choice("domains", self.domains, bank.DOMAIN_KINDS, each=True)
    _check_choice("selection", self.selection, bank.SELECTIONS)
    _check_choice("alignment", self.alignment, tuple(alignment.ALIGNMENTS))
    if not self.domains:
      raise ValueError("odgq: domains must name at least one domain")
    _check_choice("memory_initialization", self.memory_initialization,
                  memory.INITIALIZATIONS)
    for kind in ("local", "memory"):
      if self.domains.count(kind) > 1:
        raise ValueError(f"odgq: at most one {kind!r} domain, got domains={self.domains}")
    if self.local_carry_over and "local" not in self.domains:
      raise ValueError(f"odgq: local_carry_over needs a 'local' domain, got domains={self.domains}")
    if any(isinstance(alpha, str) for alpha in self.global_step_sizes):
      raise ValueError(
          f"odgq: global_step_sizes must be numbers, got {self.global_step_sizes}; on the command "
          "line give decimals, e.g. --config.method.global_step_sizes='(0.0039,0.0157)' (a "
          "command-line tuple is read as literals, so 1/255 stays a string)")
    if len(self.global_step_sizes) != self.domains.count("global"):
      raise ValueError(
          f"odgq: global_step_sizes={self.global_step_sizes} must give one step size per 'global' "
          f"domain ({self.domains.count('global')} in domains={self.domains})")
    for alpha in self.global_step_sizes:
      adversarial.check_radius_and_step("odgq", self.eps, alpha)
    adversarial.check_radius_and_step("odgq", self.eps, self.local_step_size)
    adversarial.check_radius_and_step("odgq", self.eps, self.memory_step_size)
    adversarial.check_nonnegative("odgq", "memory_momentum", self.memory_momentum)
    adversarial.check_radius_and_step("odgq", self.eps, self.fresh_step_size)
    fresh_fraction(self.fresh_step_fraction)
    adversarial.check_count("odgq", "replays", self.replays)
    adversarial.check_count("odgq", "eps_warmup_updates", self.eps_warmup_updates, minimum=0)

  @property
  def updates_per_batch(self) -> int:
    return self.replays

  @property
  def per_example_state(self) -> tuple[str, ...]:
    """The carried local domain is laid out with the batch; the memory's tables (one row per
    example of the training split) are split over the devices by rows."""
    local = ("local",) if self.local_carry_over else ()
    return local + (memory.per_example_keys(self.memory_momentum > 0)
                    if "memory" in self.domains else ())

  @property
  def _global_domains(self) -> tuple[int, ...]:
    return tuple(k for k, kind in enumerate(self.domains) if kind == "global")

  def init_method_state(self, batch_image_shape, *, num_classes, num_train_examples):
    image_shape = tuple(batch_image_shape[1:])
    state = bank.init_bank(
        len(self._global_domains), image_shape, len(self.domains),
        local_shape=tuple(batch_image_shape) if self.local_carry_over else None,
        universal_classes=num_classes if self.global_per_class else 1)
    if "memory" in self.domains:
      dtype = memory.storage_dtype(self.eps, self.memory_step_size, self.eps_warmup_updates > 0)
      state.update(memory.init_memory(num_train_examples, image_shape, dtype,
                                      momentum=self.memory_momentum > 0))
    return state

  def state_summary(self, method_state):
    """Each domain's running loss, `domain_loss_<k>_<kind>`: what loss-weighted selection weighs
    (NaN until the domain is first chosen)."""
    losses = np.asarray(method_state["domain_loss"])
    return {f"domain_loss_{k}_{kind}": float(loss)
            for k, (kind, loss) in enumerate(zip(self.domains, losses))}

  def _eps_scale(self, step: jax.Array) -> jax.Array | float:
    """eps_t / eps at optimizer update `step`: min(1, (step + 1) / W), or 1 without warm-up."""
    if not self.eps_warmup_updates:
      return 1.0
    return jnp.minimum(1.0, (step + 1) / self.eps_warmup_updates)

  def _candidates(self, universal, universal_class, local_delta, memory_delta, key, images, eps):
    """The perturbation of every domain for every example: [K, N, H, W, C]."""
    global_index = {domain: j for j, domain in enumerate(self._global_domains)}
    universal_delta = (bank.universal_candidates(universal, universal_class)
                       if self._global_domains else None)
    candidates = []
    for k, kind in enumerate(self.domains):
      if kind == "global":
        candidates.append(universal_delta[global_index[k]])
      elif kind == "local":
        candidates.append(local_delta)
      elif kind == "memory":
        candidates.append(memory_delta)
      else:
        candidates.append(jax.random.uniform(jax.random.fold_in(key, k), images.shape,
                                             images.dtype, -eps, eps))
    return jnp.stack(candidates)

  def update(self, state, batch, rng):
    images, labels = batch["image"], batch["label"]
    align = alignment.ALIGNMENTS[self.alignment]
    uses_memory = "memory" in self.domains
    if uses_memory:
      memory.check_batch(batch)
    universal_class = labels if self.global_per_class else jnp.zeros_like(labels)
    start_key, replay_key = jax.random.split(rng)
    if self.local_carry_over:
      local_start = state.method_state["local"]
    else:
      local_start = projection.random_linf_start(
          start_key, images, self.eps * self._eps_scale(state.step)) - images

    def replay(carry, key):
      state, local_delta = carry
      eps_scale = self._eps_scale(state.step)
      eps = self.eps * eps_scale
      select_key, random_key, memory_key = jax.random.split(key, 3)
      weights = bank.select_domains(select_key, self.selection, images.shape[0],
                                    state.method_state["domain_loss"], self.selection_temperature)
      memory_rows = memory_delta = None
      if uses_memory:
        memory_rows = memory.stored_perturbations(state.method_state, batch, memory_key, eps,
                                                  self.memory_initialization)
        memory_delta = memory.to_augmented_frame(memory_rows, batch)
      delta = bank.mix_perturbations(
          weights, self._candidates(state.method_state.get("universal"), universal_class,
                                    local_delta, memory_delta, random_key, images, eps))
      adversarial_images = projection.clip_to_box(images + delta)
      if self.fresh_step_fraction:
        fresh_step_size = self.fresh_step_size * eps_scale
        adversarial_images = fresh_sign_step(
            base.train_mode_logits_fn(state), images, adversarial_images, labels,
            fraction=self.fresh_step_fraction,
            eps=eps if self.fresh_step_projection else eps + fresh_step_size,
            step_size=fresh_step_size)

      def loss_fn(params, adversarial_images):
        batch_stats = state.batch_stats
        if self.beta:
          natural_params = params if self.natural_branch_grad else jax.lax.stop_gradient(params)
          natural_logits, batch_stats = base.apply_train_mode(state, natural_params, batch_stats,
                                                              images)
        logits, batch_stats = base.apply_train_mode(state, params, batch_stats,
                                                    adversarial_images)
        per_example_ce = base.cross_entropy(logits, labels, self.label_smoothing)
        loss = per_example_ce.mean()
        if self.beta:
          loss += self.beta * align(natural_logits, logits)
        return loss, (logits, batch_stats, per_example_ce)

      (loss, (logits, batch_stats, per_example_ce)), (grads, image_grad) = jax.value_and_grad(
          loss_fn, argnums=(0, 1), has_aux=True)(state.params, adversarial_images)
      method_state = dict(
          state.method_state,
          domain_loss=bank.update_domain_loss(state.method_state["domain_loss"], weights,
                                              jax.lax.stop_gradient(per_example_ce)))
      if self._global_domains:
        method_state["universal"] = bank.update_universal(
            state.method_state["universal"], weights, image_grad, self._global_domains,
            tuple(alpha * eps_scale for alpha in self.global_step_sizes), eps, universal_class)
      if uses_memory:
        method_state = memory.update(
            method_state, batch, memory_rows, weights[:, self.domains.index("memory")],
            adversarial_images - images, image_grad,
            step_size=self.memory_step_size * eps_scale, eps=eps,
            momentum=self.memory_momentum)
      if "local" in self.domains:
        local_delta = bank.update_local(adversarial_images - images, image_grad, images,
                                        self.local_step_size * eps_scale, eps)
      state = state.apply_gradients(grads, batch_stats).replace(method_state=method_state)
      return (state, local_delta), base.StepOutput(loss, logits)

    (state, local_delta), output = adversarial.replay_minibatch(
        replay, (state, local_start), self.replays, jax.random.split(replay_key, self.replays))
    if self.local_carry_over:
      state = state.replace(method_state=dict(state.method_state, local=local_delta))
    return state, output


def fresh_fraction(value: float) -> fractions.Fraction:
  """`fresh_step_fraction` as p/q with q <= MAX_FRESH_STEP_DENOMINATOR.

  Raises:
    ValueError: the value is outside [0, 1] or no such fraction.
  """
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
    raise ValueError(f"odgq: fresh_step_fraction must be a number in [0, 1], got {value!r}")
  fraction = fractions.Fraction(value).limit_denominator(MAX_FRESH_STEP_DENOMINATOR)
  if abs(float(fraction) - value) > 1e-6:
    raise ValueError(
        f"odgq: fresh_step_fraction must be p/q with q <= {MAX_FRESH_STEP_DENOMINATOR} (e.g. 0.5, "
        f"9/16 = 0.5625), got {value!r}")
  return fraction


def fresh_sign_step(logits_fn, images: jax.Array, adversarial_images: jax.Array,
                    labels: jax.Array, *, fraction: float, eps: jax.Array | float,
                    step_size: jax.Array | float) -> jax.Array:
  """x_adv <- P(x_adv + alpha sign(grad_x CE(f(x_adv), y))) for the rows r with r mod q < p.

  Args:
    logits_fn: f, the train-mode network (`base.train_mode_logits_fn`); its batch statistics are
      those of the stepped rows.
    images: the clean images x0 [N, ...], the centres of the eps-balls.
    adversarial_images: x_adv [N, ...], in the balls and in [0, 1].
    labels: int labels [N].
    fraction: p/q (`fresh_fraction`); N must be a multiple of q.
    eps: L-inf radius of P (the training radius, or the training radius plus alpha for a step
      that is not projected back: every x_adv is in the training ball, so P then clips to the
      image box alone).
    step_size: alpha.

  Returns:
    x_adv with the rows r mod q < p stepped (without gradient) and the other rows unchanged.
  """
  fresh = fresh_fraction(fraction)
  p, q = fresh.numerator, fresh.denominator
  n = images.shape[0]
  if n % q:
    raise ValueError(f"odgq: fresh_step_fraction={fraction} steps {p} of every {q} examples; the "
                     f"batch of {n} is not a multiple of {q}")
  grouped = lambda x: x.reshape(n // q, q, *x.shape[1:])
  chosen = lambda x: grouped(x)[:, :p].reshape(n // q * p, *x.shape[1:])
  chosen_labels = chosen(labels)
  objective = lambda x: jnp.sum(base.cross_entropy(logits_fn(x), chosen_labels))
  stepped = adversarial.sign_gradient_ascent(objective, chosen(images), chosen(adversarial_images),
                                             eps=eps, step_size=step_size, num_steps=1)
  return grouped(adversarial_images).at[:, :p].set(
      stepped.reshape(n // q, p, *stepped.shape[1:])).reshape(adversarial_images.shape)


def _check_choice(name, value, allowed, each=False):
  values = value if each else (value,)
  bad = [v for v in values if v not in allowed]
  if bad:
    raise ValueError(f"odgq: {name} must be {'each ' if each else ''}one of {allowed}, got "
                     f"{value!r}")
