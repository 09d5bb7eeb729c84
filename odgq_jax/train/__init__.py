"""Training: the train state, optimizer, compiled steps and the resumable training loop.

The loop (`evaluate`, `train_and_evaluate`) reads its data with tensorflow-datasets and is imported
on first use, so that the rest (e.g. `odgq_jax.train.steps`, for `benchmarks/throughput.py` on
synthetic data) imports without TensorFlow.
"""
import importlib

from odgq_jax.train.optimizer import create_learning_rate_fn, create_optimizer
from odgq_jax.train_state import TrainState, abstract_train_state, create_train_state
from odgq_jax.train.steps import compile_steps, eval_step, train_step

_LAZY = {"evaluate": "odgq_jax.train.loop", "train_and_evaluate": "odgq_jax.train.loop"}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'odgq_jax.train' has no attribute {name!r}")


__all__ = ["TrainState", "abstract_train_state", "compile_steps", "create_learning_rate_fn",
           "create_optimizer", "create_train_state", "eval_step", "evaluate", "train_and_evaluate",
           "train_step"]
