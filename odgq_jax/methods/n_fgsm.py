"""N-FGSM: noise-augmented FGSM adversarial training (de Jorge et al. NeurIPS 2022, "Make some
noise: reliable and efficient single-step adversarial training").

  eta ~ U[-k, k]^d,  x_adv = clip(x + eta + alpha sign(grad_x CE(f(clip(x + eta)), y)), 0, 1),

with noise magnitude k = 2 eps and step alpha = eps (16/255 and 8/255 for eps = 8/255), and *no*
projection back to the eps-ball: the training perturbation reaches 3 eps in L-inf. Then one
optimizer update on CE(f(x_adv), y). The authors find the stronger noise, not the projection,
avoids catastrophic overfitting at large steps; a step costs 2 forward+backward passes, as
FGSM-RS's does.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from odgq_jax.attacks import projection
from odgq_jax.methods import adversarial
from odgq_jax.methods import base
from odgq_jax.methods.registry import register


@register("n_fgsm")
@dataclasses.dataclass(frozen=True)
class NFGSM(base.TrainingMethod):
  """N-FGSM.

  Attributes:
    eps: the L-inf radius the network is trained to resist (sets the defaults below).
    noise_magnitude: k, the half-width of the uniform noise (the paper's 2 eps).
    step_size: alpha of the FGSM step (the paper's eps).
  """
  eps: float = 8 / 255
  noise_magnitude: float = 16 / 255
  step_size: float = 8 / 255

  def __post_init__(self):
    adversarial.check_radius_and_step("n_fgsm", self.eps, self.step_size)
    if not 0 <= self.noise_magnitude <= 1:
      raise ValueError(f"n_fgsm: noise_magnitude must be in [0, 1], got {self.noise_magnitude!r}")

  def update(self, state, batch, rng):
    images, labels = batch["image"], batch["label"]
    logits_fn = base.train_mode_logits_fn(state)
    noise = jax.random.uniform(rng, images.shape, images.dtype, -self.noise_magnitude,
                               self.noise_magnitude)
    noisy = projection.clip_to_box(images + noise)
    gradient = jax.grad(lambda x: jnp.sum(base.cross_entropy(logits_fn(x), labels)))(noisy)
    adversarial_images = jax.lax.stop_gradient(
        projection.clip_to_box(noisy + self.step_size * jnp.sign(gradient)))
    state, output, _ = base.gradient_update(state, adversarial_images, labels,
                                            self.label_smoothing)
    return state, output
