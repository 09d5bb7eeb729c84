"""The evaluation protocols of docs/evaluation.md: which attacks, on how many examples, with
what budget.

Ten attacks, five white-box and five black-box, at the threat model's eps (CIFAR-10: 8/255):

| name             | kind  | what                                                             |
|------------------|-------|------------------------------------------------------------------|
| fgsm             | white | single step of eps                                               |
| pgd20            | white | 20 steps of 2/255 from a random start (10 restarts in "full")    |
| mim              | white | momentum iterative FGSM, 10 steps, decay 1.0                     |
| cw_inf           | white | PGD on the Carlini-Wagner margin, 30 steps                       |
| apgd_ce          | white | APGD on cross-entropy, 100 iterations                            |
| transfer_fp      | black | PGD-20 on an independent full-precision model, same architecture |
| transfer_arch    | black | PGD-20 on a full-precision model of another architecture         |
| transfer_low_bit | black | PGD-20 on a 2-bit model of the same architecture                 |
| transfer_di_mi   | black | DI-MI-FGSM on the full-precision substitute                      |
| square           | black | Square attack, margin loss, p_init 0.8, 1,000 / 5,000 queries    |

plus PGD++ (`pgdpp`) among the white-box attacks for binary networks, and PGD-100 for the
sanity check. The transfer attacks need substitutes (`configs/substitute_*.py`, committed as
exports in `results/substitute_*/export/`); the substitute each one uses is named by
`TRANSFER_SUBSTITUTES`.
"""
from __future__ import annotations

import dataclasses

WHITE_BOX = ("fgsm", "pgd20", "mim", "cw_inf", "apgd_ce")
BLACK_BOX = ("transfer_fp", "transfer_arch", "transfer_low_bit", "transfer_di_mi", "square")
BINARY_EXTRA = ("pgdpp",)
SANITY_ONLY = ("pgd100",)
# Every attack a report can hold; `launch/eval.py --attacks` picks a subset of these.
ATTACK_NAMES = WHITE_BOX + BINARY_EXTRA + SANITY_ONLY + BLACK_BOX

# Transfer attack -> (substitute name given with --substitute NAME=DIR, crafting attack).
TRANSFER_SUBSTITUTES = {
    "transfer_fp": ("fp", "pgd20"),
    "transfer_arch": ("arch", "pgd20"),
    "transfer_low_bit": ("low_bit", "pgd20"),
    "transfer_di_mi": ("fp", "di_mi_fgsm"),
}
SUBSTITUTE_NAMES = ("fp", "arch", "low_bit")


def check_attack_subset(names) -> None:
  """Raises ValueError unless `names` is a non-empty collection of names from ATTACK_NAMES."""
  unknown = sorted(set(names) - set(ATTACK_NAMES))
  if unknown or not names:
    raise ValueError(f"attacks must be names from {ATTACK_NAMES}, got {list(names)!r}")


@dataclasses.dataclass(frozen=True)
class Protocol:
  """A named evaluation budget.

  Attributes:
    name: "quick" or "full".
    num_examples: the first `num_examples` of the test split (None: all of it).
    square_queries: Square attack's query budget.
    pgd_restarts: PGD-20's random restarts.
    curve_eps: the radii of the robust-accuracy-versus-eps curve (PGD-20).
    sanity_eps: the radius at which every model must fall below 5% accuracy.
  """
  name: str
  num_examples: int | None
  square_queries: int
  pgd_restarts: int
  curve_eps: tuple[float, ...] = (2 / 255, 4 / 255, 8 / 255, 16 / 255)
  sanity_eps: float = 64 / 255


PROTOCOLS = {
    "quick": Protocol("quick", num_examples=1000, square_queries=1000, pgd_restarts=1),
    "full": Protocol("full", num_examples=None, square_queries=5000, pgd_restarts=10),
}
