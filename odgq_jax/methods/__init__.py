"""Training methods: natural QAT, the robust-training baselines and ODG-Q, by name."""
from odgq_jax.methods import (dq, dwq, fgsm_rs, free_at, n_fgsm, natural, odgq,  # registers them
                              pgd_at, trades)
from odgq_jax.methods.base import StepOutput, TrainingMethod
from odgq_jax.methods.registry import (METHODS, create_method, create_method_for_run,
                                       method_config)

__all__ = ["METHODS", "StepOutput", "TrainingMethod", "create_method", "create_method_for_run",
           "method_config"]
