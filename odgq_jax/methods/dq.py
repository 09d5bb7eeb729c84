"""Defensive Quantization (Lin, Gan & Han 2019, "Defensive quantization: when efficiency meets
robustness", ICLR).

Quantization amplifies adversarial noise layer by layer (a perturbation that pushes an activation
over a quantization threshold grows to a whole quantization step); DQ keeps every layer
non-expansive by driving its weight matrix towards orthogonality, which bounds the network's
Lipschitz constant:

  min_theta E[ CE(f_theta(x), y) ] + lambda * sum_l ||W_l^T W_l - I||_F^2,

W_l the kernel of conv or dense layer l reshaped to [fan_in, out] (kh * kw * c_in rows for a
conv), so that W_l^T W_l = I makes the layer's output channels orthonormal filters (a kernel with
fewer rows than columns, such as a widening 1x1 shortcut, cannot reach it: its penalty is
smallest, out - fan_in, with orthonormal rows). As in the paper, the penalty is on the
full-precision (latent) weights, not on the quantized weights the forward pass uses: the quantized
weights are piecewise constant in the latent ones, so a penalty on them would have only
straight-through gradients, and orthogonal latent weights quantize to nearly orthogonal ones. With
`adversarial`, the cross-entropy is taken on FGSM-RS examples (`fgsm_rs.py`) instead of the clean
images: DQ combined with adversarial training.

lambda's default is this project's choice (the paper's value was not available to us): the
penalty of the W4A4 ResNet-20 at initialisation is about 850, so 3e-4 starts it near 0.25, about a
tenth of the initial cross-entropy (ln 10 = 2.3).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from odgq_jax import models
from odgq_jax.methods import adversarial
from odgq_jax.methods import base
from odgq_jax.methods.registry import register


def orthogonality_penalty(params: Any) -> jax.Array:
  """sum_l ||W_l^T W_l - I||_F^2 over the kernels in `params`, each reshaped to [fan_in, out]."""
  penalty = jnp.zeros((), jnp.float32)
  for path, kernel in jax.tree_util.tree_flatten_with_path(params)[0]:
    if getattr(path[-1], "key", None) != models.KERNEL_PARAM_NAME:
      continue
    matrix = jnp.reshape(kernel, (-1, kernel.shape[-1]))
    gram = matrix.T @ matrix
    penalty += jnp.sum(jnp.square(gram - jnp.eye(gram.shape[0], dtype=gram.dtype)))
  return penalty


@register("dq")
@dataclasses.dataclass(frozen=True)
class DefensiveQuantization(base.TrainingMethod):
  """Defensive Quantization.

  Attributes:
    lipschitz_weight: lambda, the weight of the orthogonality penalty.
    adversarial: train on FGSM-RS examples instead of the clean images.
    eps: L-inf radius of the FGSM-RS examples (used only with `adversarial`).
    step_size: alpha of the FGSM-RS step (used only with `adversarial`).
  """
  lipschitz_weight: float = 3e-4
  adversarial: bool = False
  eps: float = 8 / 255
  step_size: float = 10 / 255

  def __post_init__(self):
    adversarial.check_nonnegative("dq", "lipschitz_weight", self.lipschitz_weight)
    adversarial.check_flag("dq", "adversarial", self.adversarial)
    adversarial.check_radius_and_step("dq", self.eps, self.step_size)

  def update(self, state, batch, rng):
    regularizer = lambda params: self.lipschitz_weight * orthogonality_penalty(params)
    if self.adversarial:
      return adversarial.pgd_training_update(
          state, batch, rng, eps=self.eps, step_size=self.step_size, num_steps=1,
          label_smoothing=self.label_smoothing, regularizer=regularizer)
    state, output, _ = base.gradient_update(state, batch["image"], batch["label"],
                                            self.label_smoothing, regularizer)
    return state, output
