"""FGSM with random start, "fast" adversarial training (Wong, Rice & Kolter 2020, "Fast is better
than free: revisiting adversarial training").

  delta_0 ~ U[-eps, eps]^d,  x_adv = P(x + delta_0 + alpha sign(grad_x CE(f(x + delta_0), y))),

P the projection onto the eps-ball and [0, 1], alpha = 1.25 eps = 10/255 for eps = 8/255; then
one optimizer update on CE(f(x_adv), y). This is PGD-AT's crafting with one step
(`adversarial.pgd_examples`); a step costs 2 forward+backward passes.
"""
from __future__ import annotations

import dataclasses

from odgq_jax.methods import adversarial
from odgq_jax.methods import base
from odgq_jax.methods.registry import register


@register("fgsm_rs")
@dataclasses.dataclass(frozen=True)
class FGSMRS(base.TrainingMethod):
  """FGSM-RS.

  Attributes:
    eps: L-inf radius of the random start and of the training perturbations.
    step_size: alpha of the FGSM step (the paper's 1.25 eps).
  """
  eps: float = 8 / 255
  step_size: float = 10 / 255

  def __post_init__(self):
    adversarial.check_radius_and_step("fgsm_rs", self.eps, self.step_size)

  def update(self, state, batch, rng):
    return adversarial.pgd_training_update(
        state, batch, rng, eps=self.eps, step_size=self.step_size, num_steps=1,
        label_smoothing=self.label_smoothing)
