"""Adversarial attacks for the evaluation protocol (`docs/evaluation.md`), as pure batched
functions.

Every attack is `attack(logits_fn, images, labels, key, settings) -> adversarial_images`:
`logits_fn` maps float32 images [N, H, W, C] in [0, 1] to logits [N, K] (the model in eval mode),
`labels` are int32 [N], `key` a PRNG key and `settings` a frozen (hashable, so jit-static)
dataclass with an `eps` field. The result has the shape and dtype of `images`, lies in [0, 1] and
in the eps-ball (L-inf, or L2 for PGD with norm "l2"); it is deterministic given the key.

`ATTACKS` maps the protocol's attack names to (attack, settings) at the protocol defaults; change
the radius with `dataclasses.replace(settings, eps=...)`. The transfer attacks are
`transfer_attack` with a substitute model (PGD-20 or `ATTACKS["di_mi_fgsm"]`'s settings as
crafting); randomised models are attacked through `expectation_over_transformation`.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from odgq_jax.attacks.apgd import APGDSettings, apgd, checkpoints
from odgq_jax.attacks.eot import expectation_over_transformation
from odgq_jax.attacks.gradient import FGSMSettings, MIMSettings, PGDSettings, fgsm, mim, pgd
from odgq_jax.attacks.losses import (LOSSES, LogitsFn, carlini_wagner, cross_entropy,
                                     difference_of_logits_ratio, true_class_margin)
from odgq_jax.attacks.projection import (DEFAULT_EPS, project_l2, project_linf, random_l2_start,
                                         random_linf_start)
from odgq_jax.attacks.square import SquareSettings, square
from odgq_jax.attacks.transfer import TransferSettings, transfer_attack


# attack(logits_fn, images, labels, key, settings) -> adversarial images.
Attack = Callable[[LogitsFn, jax.Array, jax.Array, jax.Array, Any], jax.Array]


class RegisteredAttack(NamedTuple):
  """An attack function and its settings; unpacks as `attack, settings = ATTACKS[name]`."""
  attack: Attack
  settings: Any


# The quick protocol's budgets at eps 8/255; the evaluation (`odgq_jax.evaluation`) sets eps,
# PGD-20's restarts (10 in the full protocol) and Square's queries (5000 in the full protocol).
# CW-inf takes PGD-20's step size; PGD++ PGD-20's budget; DI-MI-FGSM, an attack for transfer,
# returns its final iterate (see `TransferSettings`).
ATTACKS: dict[str, RegisteredAttack] = {
    "fgsm": RegisteredAttack(fgsm, FGSMSettings()),
    "pgd20": RegisteredAttack(pgd, PGDSettings(step_size=2 / 255, num_steps=20, num_restarts=1)),
    "pgd100": RegisteredAttack(pgd, PGDSettings(step_size=2 / 255, num_steps=100)),
    "mim": RegisteredAttack(mim, MIMSettings(num_steps=10, decay=1.0)),
    "cw_inf": RegisteredAttack(pgd, PGDSettings(loss="cw", step_size=2 / 255, num_steps=30)),
    "apgd_ce": RegisteredAttack(apgd, APGDSettings(loss="ce", num_steps=100)),
    "apgd_dlr": RegisteredAttack(apgd, APGDSettings(loss="dlr", num_steps=100)),
    "pgdpp": RegisteredAttack(pgd, PGDSettings(temperature="auto")),
    "square": RegisteredAttack(square, SquareSettings(num_queries=1000, p_init=0.8)),
    "di_mi_fgsm": RegisteredAttack(
        mim, MIMSettings(num_steps=10, decay=1.0, diversity_probability=0.5,
                         track_every_step=False)),
}

__all__ = [
    "ATTACKS",
    "APGDSettings",
    "Attack",
    "DEFAULT_EPS",
    "FGSMSettings",
    "LOSSES",
    "LogitsFn",
    "MIMSettings",
    "PGDSettings",
    "RegisteredAttack",
    "SquareSettings",
    "TransferSettings",
    "apgd",
    "carlini_wagner",
    "checkpoints",
    "cross_entropy",
    "difference_of_logits_ratio",
    "expectation_over_transformation",
    "fgsm",
    "mim",
    "pgd",
    "project_l2",
    "project_linf",
    "random_l2_start",
    "random_linf_start",
    "square",
    "transfer_attack",
    "true_class_margin",
]
