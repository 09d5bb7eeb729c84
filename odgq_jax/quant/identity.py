"""The identity quantizer: full precision, for configs that ask for no quantization."""
from __future__ import annotations

import dataclasses

import jax

from odgq_jax.quant.base import Params, Quantizer, register


@register("none")
@dataclasses.dataclass(frozen=True)
class Identity(Quantizer):
  """Full precision: no quantization.

  Forward: y = x.
  Backward: dy/dx = 1 (ordinary differentiation; no STE is involved).
  """

  def __call__(self, x: jax.Array, params: Params | None = None) -> jax.Array:
    del params
    return x
