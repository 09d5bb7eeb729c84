"""TRADES (Zhang et al. 2019, "Theoretically principled trade-off between robustness and
accuracy").

  min_theta E[ CE(f(x0), y) + beta * max_{||x - x0||_inf <= eps} KL(p(x0) || p(x)) ],

p = softmax(f). The inner maximum: 10 sign-gradient steps of 2/255 on KL(p(x0) || p(x)), p(x0)
held fixed, from x0 + 0.001 N(0, I) (`adversarial.sign_gradient_ascent`); then one optimizer
update on the loss above with gradients through both the natural and the adversarial branch.
A step costs K forward+backward passes for crafting, one forward for p(x0), and two
forward+backward passes for the update.

The authors' code crafts with the network in eval mode (running BatchNorm statistics); here, as
for the other baselines, the attack sees the network in train mode (batch statistics), so that
every method is attacked by the same network during training. The step's logits are those of the
natural branch, whose cross-entropy is the task loss.
"""
from __future__ import annotations

import dataclasses

import jax

from odgq_jax.methods import adversarial
from odgq_jax.methods import alignment
from odgq_jax.methods import base
from odgq_jax.methods.registry import register


@register("trades")
@dataclasses.dataclass(frozen=True)
class TRADES(base.TrainingMethod):
  """TRADES.

  Attributes:
    beta: weight of the KL robustness term (1/lambda in the paper; 6 on CIFAR-10).
    eps: L-inf radius of the adversarial inputs.
    step_size: alpha of each crafting step.
    attack_steps: K, the crafting steps.
    start_noise_std: standard deviation of the Gaussian noise of the crafting start.
  """
  beta: float = 6.0
  eps: float = 8 / 255
  step_size: float = 2 / 255
  attack_steps: int = 10
  start_noise_std: float = 0.001

  def __post_init__(self):
    adversarial.check_nonnegative("trades", "beta", self.beta)
    adversarial.check_radius_and_step("trades", self.eps, self.step_size)
    adversarial.check_count("trades", "attack_steps", self.attack_steps)
    adversarial.check_nonnegative("trades", "start_noise_std", self.start_noise_std)

  def update(self, state, batch, rng):
    images, labels = batch["image"], batch["label"]
    logits_fn = base.train_mode_logits_fn(state)
    fixed_natural_logits = jax.lax.stop_gradient(logits_fn(images))
    start = images + self.start_noise_std * jax.random.normal(rng, images.shape, images.dtype)
    adversarial_images = adversarial.sign_gradient_ascent(
        lambda x: alignment.kl_divergence(fixed_natural_logits, logits_fn(x)), images, start,
        eps=self.eps, step_size=self.step_size, num_steps=self.attack_steps)

    def loss_fn(params):
      natural_logits, batch_stats = base.apply_train_mode(state, params, state.batch_stats, images)
      adversarial_logits, batch_stats = base.apply_train_mode(state, params, batch_stats,
                                                              adversarial_images)
      loss = (base.cross_entropy(natural_logits, labels, self.label_smoothing).mean()
              + self.beta * alignment.kl_divergence(natural_logits, adversarial_logits))
      return loss, (natural_logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads, batch_stats), base.StepOutput(loss, logits)
