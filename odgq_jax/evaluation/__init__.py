"""Robustness evaluation (docs/evaluation.md): protocols, the attack runner, sanity checks and
reports."""
from odgq_jax.evaluation.protocol import PROTOCOLS, Protocol
from odgq_jax.evaluation.report import write_report
from odgq_jax.evaluation.robustness import evaluate_robustness, sanity_checks

__all__ = ["PROTOCOLS", "Protocol", "evaluate_robustness", "sanity_checks", "write_report"]
