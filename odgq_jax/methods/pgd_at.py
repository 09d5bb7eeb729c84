"""PGD adversarial training (Madry et al. 2018, "Towards deep learning models resistant to
adversarial attacks").

  min_theta E[ max_{||delta||_inf <= eps} CE(f_theta(x + delta), y) ],

the inner maximum approximated by K steps of PGD from a uniform random start in the eps-ball
(`adversarial.pgd_examples`, against the train-mode network), the outer by one optimizer update on
CE(f(x_adv), y). A step costs K + 1 forward+backward passes: 11 for PGD-10.
"""
from __future__ import annotations

import dataclasses

from odgq_jax.methods import adversarial
from odgq_jax.methods import base
from odgq_jax.methods.registry import register


@register("pgd_at")
@dataclasses.dataclass(frozen=True)
class PGDAT(base.TrainingMethod):
  """PGD-AT.

  Attributes:
    eps: L-inf radius of the training perturbations.
    step_size: alpha of each PGD step.
    attack_steps: K, the PGD steps per minibatch (Madry et al. use 7 on CIFAR-10; 10 is also
      common).
  """
  eps: float = 8 / 255
  step_size: float = 2 / 255
  attack_steps: int = 10

  def __post_init__(self):
    adversarial.check_radius_and_step("pgd_at", self.eps, self.step_size)
    adversarial.check_count("pgd_at", "attack_steps", self.attack_steps)

  def update(self, state, batch, rng):
    return adversarial.pgd_training_update(
        state, batch, rng, eps=self.eps, step_size=self.step_size, num_steps=self.attack_steps,
        label_smoothing=self.label_smoothing)
