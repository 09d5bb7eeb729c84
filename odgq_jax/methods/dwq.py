"""Double-Win Quant (Fu et al. 2021, "Double-Win Quant: aggressively winning robustness of quantized
deep neural networks via random precision training and inference").

Random precision training (RPT): every step draws a bit-width b uniformly from the model's
`switchable_bits` {b_1, .., b_P} and makes one adversarial-training update of the network at b
bits,

  b ~ U{b_1, .., b_P},  x_adv = PGD_K(f_b, x, y),  theta <- update on CE(f_b(x_adv), y),

where f_b runs its hidden layers' quantizers at b bits with the BatchNorm of b (switchable
BatchNorm: one set of BN parameters and statistics per precision, `models.PrecisionBatchNorm`);
kernels are shared. x_adv is FGSM-RS by default (K = 1, alpha = 10/255, random start; the paper
builds DWQ on PGD-7 and on FGSM-RS, `attack_steps` and `step_size` select either), crafted against
f_b itself.

Random precision inference (RPI) answers each query at a random precision; `load_classifier`
evaluates the expectation of that prediction exactly, log((1/P) sum_b softmax(f_b(x))), which is the
EOT model of docs/evaluation.md with every draw enumerated.

The draw is `lax.switch` over the P precisions: one compiled step holds P branches (P times the
compilation of FGSM-RS) and runs one of them, so a step costs what an FGSM-RS step at that precision
costs. Parameters of the precisions not drawn get a zero gradient; SGD momentum still moves them
by their past momentum, which decays by 0.9 a step.
"""
from __future__ import annotations

import dataclasses
import functools

import jax

from odgq_jax.methods import adversarial
from odgq_jax.methods import base
from odgq_jax.methods.registry import register


@register("dwq")
@dataclasses.dataclass(frozen=True)
class DoubleWinQuant(base.TrainingMethod):
  """Double-Win Quant's random precision training.

  Attributes:
    eps: L-inf radius of the training perturbations.
    step_size: alpha of each attack step (10/255 for FGSM-RS; 2/255 for PGD-7).
    attack_steps: K, attack steps per minibatch (1: FGSM-RS; 7: the paper's PGD-7).
    switchable_bits: the precisions drawn from (set from the run's `config.model.switchable_bits`).
  """
  trains_switchable_precision = True

  eps: float = 8 / 255
  step_size: float = 10 / 255
  attack_steps: int = 1
  switchable_bits: tuple[int, ...] = dataclasses.field(default=(), kw_only=True)

  def __post_init__(self):
    adversarial.check_radius_and_step("dwq", self.eps, self.step_size)
    adversarial.check_count("dwq", "attack_steps", self.attack_steps)
    if len(self.switchable_bits) < 2:
      raise ValueError("dwq trains a switchable-precision model: set model.switchable_bits to at "
                       "least two bit-widths, e.g. (4, 5, 6, 7, 8); got "
                       f"{list(self.switchable_bits)}")

  def update(self, state, batch, rng):
    precision_key, attack_key = jax.random.split(rng)

    def train_at(bits, state):
      at_bits = state.replace(apply_fn=functools.partial(state.apply_fn, precision=bits))
      new_state, output = adversarial.pgd_training_update(
          at_bits, batch, attack_key, eps=self.eps, step_size=self.step_size,
          num_steps=self.attack_steps, label_smoothing=self.label_smoothing)
      return new_state.replace(apply_fn=state.apply_fn), output

    index = jax.random.randint(precision_key, (), 0, len(self.switchable_bits))
    branches = [functools.partial(train_at, bits) for bits in self.switchable_bits]
    return jax.lax.switch(index, branches, state)
