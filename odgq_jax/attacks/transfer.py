"""Transfer attack: adversarials crafted on a substitute model, to be scored on the target.

The black-box transfer attacks of the evaluation protocol (from an independently trained
full-precision model, a different architecture, a low-bit substitute; DI-MI-FGSM) differ only in
the substitute and the crafting attack. The target model is never called here: the caller scores
the returned images on it.
"""
from __future__ import annotations

import dataclasses

import jax

from odgq_jax.attacks.gradient import MIMSettings, PGDSettings, mim, pgd
from odgq_jax.attacks.losses import LogitsFn
from odgq_jax.attacks.projection import DEFAULT_EPS


@dataclasses.dataclass(frozen=True)
class TransferSettings:
  """Options of a transfer attack.

  The crafting attack returns its final iterate by default (`track_every_step` off): picking the
  first iterate that fools the substitute would stop at its decision boundary, which transfers
  worse than the full run.

  Attributes:
    eps: L-inf radius. It overrides `crafting.eps`: after construction `crafting.eps == eps`, also
      after `dataclasses.replace(settings, eps=...)`.
    crafting: the attack run on the substitute, PGD (`PGDSettings`, PGD-20 by default) or MIM /
      DI-MI-FGSM (`MIMSettings`).
  """
  eps: float = DEFAULT_EPS
  crafting: PGDSettings | MIMSettings = PGDSettings(track_every_step=False)

  def __post_init__(self):
    if not isinstance(self.crafting, (PGDSettings, MIMSettings)):
      raise ValueError(f"transfer: crafting must be PGDSettings or MIMSettings, got "
                       f"{type(self.crafting).__name__}")
    object.__setattr__(self, "crafting", dataclasses.replace(self.crafting, eps=self.eps))


def transfer_attack(substitute_logits_fn: LogitsFn, images: jax.Array, labels: jax.Array,
                    key: jax.Array, settings: TransferSettings) -> jax.Array:
  """Runs `settings.crafting` on the substitute model; the cost is that attack's, on the substitute.

  Args:
    substitute_logits_fn: the substitute model, images [N, ...] in [0, 1] -> logits [N, K].
    images: clean images [N, ...] in [0, 1].
    labels: int labels [N].
    key: PRNG key of the crafting attack.
    settings: the options.

  Returns:
    Adversarial images, the shape and dtype of `images`, to be scored on the target model.
  """
  crafting_attack = pgd if isinstance(settings.crafting, PGDSettings) else mim
  return crafting_attack(substitute_logits_fn, images, labels, key, settings.crafting)
