"""Training: the train state, optimizer, compiled steps and the resumable training loop."""
from odgq_jax.train.loop import evaluate, train_and_evaluate
from odgq_jax.train.optimizer import create_learning_rate_fn, create_optimizer
from odgq_jax.train_state import TrainState, abstract_train_state, create_train_state
from odgq_jax.train.steps import compile_steps, eval_step, train_step
