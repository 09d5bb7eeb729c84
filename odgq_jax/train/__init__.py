"""Training: the train state, optimizer, compiled steps and the resumable training loop."""
from odgq_jax.train.loop import evaluate, train_and_evaluate
from odgq_jax.train.optimizer import create_learning_rate_fn, create_optimizer
from odgq_jax.train_state import TrainState, abstract_train_state, create_train_state
from odgq_jax.train.steps import compile_steps, eval_step, train_step

__all__ = ["TrainState", "abstract_train_state", "compile_steps", "create_learning_rate_fn",
           "create_optimizer", "create_train_state", "eval_step", "evaluate", "train_and_evaluate",
           "train_step"]
