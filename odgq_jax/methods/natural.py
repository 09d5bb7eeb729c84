"""Natural (quantization-aware) training: cross-entropy on the clean images."""
from __future__ import annotations

import dataclasses

from odgq_jax.methods import base
from odgq_jax.methods.registry import register


@register("natural")
@dataclasses.dataclass(frozen=True)
class Natural(base.TrainingMethod):
  """min_theta E[CE(f_theta(x), y)]: the non-robust reference, one forward-backward per step."""

  def update(self, state, batch, rng):
    del rng
    state, output, _ = base.gradient_update(state, batch["image"], batch["label"],
                                            self.label_smoothing)
    return state, output
