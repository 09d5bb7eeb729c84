"""`train_and_evaluate`: the training run, resumable from its workdir.

One compiled train step of the configured training method over the device mesh, fed by the
deterministic input pipeline. `step` counts optimizer updates: the learning-rate schedule, logging,
evaluation and checkpoints follow it. A method that replays each minibatch m times (Free-AT, ODG-Q's
local domains) makes m updates per minibatch and reads 1/m as many minibatches, so a run of
`num_epochs` makes as many updates as natural training (Shafahi et al. 2019). Periodic
log lines (loss, accuracy, learning rate, images/s, ETA), TensorBoard summaries, evaluation every
`eval_every_epochs`, and orbax checkpoints every `checkpoint_every_steps`, at each evaluation and at
the end, each with the run record `run.json` (`odgq_jax/run_record.py`). Started again on the same
workdir, a run continues from its latest checkpoint with the same step, data order, random numbers
and learning-rate position. A NaN or infinite loss or model variable stops the run with an error
naming the step, before that state is logged, evaluated or saved (`nonfinite.py`).
"""
from __future__ import annotations

import itertools
import logging
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
from clu import metric_writers

from odgq_jax import checkpointing
from odgq_jax import methods
from odgq_jax import models
from odgq_jax import parallel
from odgq_jax import run_record
from odgq_jax.data import input_pipeline
from odgq_jax.train import nonfinite
from odgq_jax.train import optimizer
from odgq_jax import train_state as state_lib
from odgq_jax.train import steps


def evaluate(eval_step: Callable[..., Any], state: state_lib.TrainState,
             batches: Iterator[dict[str, jax.Array]]) -> dict[str, float]:
  """Clean loss and accuracy over every example of the eval split (padding masked out)."""
  eval_metrics = None
  for batch in batches:
    batch_metrics = eval_step(state, batch)
    eval_metrics = batch_metrics if eval_metrics is None else eval_metrics.merge(batch_metrics)
  return {k: float(v) for k, v in eval_metrics.compute().items()}


def _crossed(step: int, updates_per_batch: int, every: int) -> bool:
  """Whether a multiple of `every` lies in (step - updates_per_batch, step]."""
  return step // every > (step - updates_per_batch) // every


def _format_duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _stop_if_nonfinite(train_metrics: steps.TrainMetrics, state: state_lib.TrainState,
                       checkpointer: checkpointing.Checkpointer) -> None:
  """Raises NonFiniteError if a step since the last log line went non-finite (`nonfinite.py`).

  Called before every log line, evaluation and save, so a non-finite state is never saved.
  """
  problem = nonfinite.describe(train_metrics.nonfinite, state.variables)
  if problem is None:
    return
  latest = checkpointer.latest_step()
  saved = ("no checkpoint was saved" if latest is None else
           f"the latest checkpoint, step {latest} in {checkpointer.directory}, is the last finite "
           "state")
  raise nonfinite.NonFiniteError(f"{problem}; the run stopped without saving this state ({saved})")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> state_lib.TrainState:
  """Trains `config`'s model in `workdir` (resuming from its checkpoints) and returns the state."""
  started = time.perf_counter()
  mesh = parallel.create_mesh()
  parallel.check_batch_divides(config.batch_size, mesh, "batch_size")
  parallel.check_batch_divides(config.eval_batch_size, mesh, "eval_batch_size")
  info = input_pipeline.get_dataset_info(config)
  steps_per_epoch = input_pipeline.steps_per_epoch(config)
  total_steps = int(config.num_epochs * steps_per_epoch)
  eval_every_steps = max(1, int(config.eval_every_epochs * steps_per_epoch))

  model = models.create_model_for_run(config, info.num_classes)
  method = methods.create_method_for_run(config)
  updates_per_batch = method.updates_per_batch
  if total_steps % updates_per_batch:
    raise ValueError(
        f"num_epochs * steps_per_epoch = {total_steps} updates is not a multiple of the method's "
        f"{updates_per_batch} updates per minibatch; change num_epochs, batch_size or train_split "
        "(at batch 128, a split of 44,800 images gives 350 steps per epoch)")
  learning_rate_fn = optimizer.create_learning_rate_fn(config, steps_per_epoch)
  tx = optimizer.create_optimizer(config, learning_rate_fn)

  checkpointing.save_or_check_config(config, workdir)
  checkpointing.save_dataset_info(info.num_classes, info.image_shape, workdir)
  checkpointer = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
  resume_step = checkpointer.latest_step() or 0

  local_batches = input_pipeline.train_batches(
      config, start_step=resume_step // updates_per_batch)
  first_batch = next(local_batches)
  sample_images = parallel.make_global_batch(first_batch, mesh)["image"]
  method_state = method.init_method_state(
      (config.batch_size, *sample_images.shape[1:]), num_classes=info.num_classes,
      num_train_examples=info.num_train_examples)
  state = state_lib.create_train_state(
      jax.random.PRNGKey(config.seed), model, tx, sample_images, mesh, method_state,
      method.method_state_sharding(method_state, mesh))
  state = checkpointer.restore(state)
  start_step = int(state.step)
  train_step, eval_step = steps.compile_steps(mesh, method, learning_rate_fn)

  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0, asynchronous=True)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info("%s, %s on %s (%d training examples in %s, %d eval examples in %s): %d parameters, "
               "%d devices, global batch %d, %d steps per epoch, %d updates per minibatch, "
               "steps %d -> %d", config.method.name, config.model.name, config.dataset,
               info.num_train_examples, config.train_split, info.num_eval_examples,
               config.eval_split, num_params, mesh.size, config.batch_size, steps_per_epoch,
               updates_per_batch, start_step, total_steps)
  if start_step >= total_steps:
    logging.info("Nothing to do: the checkpoint is at step %d of %d.", start_step, total_steps)
    return state

  record = run_record.RunRecord(workdir, config, start_step, steps_per_epoch, started)
  batches = parallel.prefetch_to_mesh(itertools.chain([first_batch], local_batches), mesh)
  eval_batches = lambda: parallel.prefetch_to_mesh(input_pipeline.eval_batches(config), mesh)
  train_metrics = None
  interval_start, interval_batches = time.perf_counter(), 0
  step = start_step
  try:
    steps_run = range(start_step + updates_per_batch, total_steps + 1, updates_per_batch)
    for step, batch in zip(steps_run, batches):
      state, step_metrics = train_step(state, batch)
      train_metrics = step_metrics if train_metrics is None else train_metrics.merge(step_metrics)
      interval_batches += 1
      if step == start_step + updates_per_batch:
        jax.block_until_ready(state)
        logging.info("First step (compilation included) took %.1f s.",
                     time.perf_counter() - interval_start)
        interval_start, interval_batches = time.perf_counter(), 0

      log_now = _crossed(step, updates_per_batch, config.log_every_steps) or step == total_steps
      eval_now = _crossed(step, updates_per_batch, eval_every_steps) or step == total_steps
      save_now = eval_now or _crossed(step, updates_per_batch, config.checkpoint_every_steps)
      if log_now or save_now:
        _stop_if_nonfinite(train_metrics, state, checkpointer)

      if log_now:
        summary = {f"train_{k}": float(v) for k, v in train_metrics.compute().items()}
        train_metrics = None
        interval_seconds = time.perf_counter() - interval_start
        seconds_per_batch = interval_seconds / max(interval_batches, 1)
        record.add_timing(interval_seconds, interval_batches * updates_per_batch)
        summary["images_per_second"] = config.batch_size / seconds_per_batch
        method_summary = method.state_summary(state.method_state)
        writer.write_scalars(step, summary | {f"train_{k}": v for k, v in method_summary.items()})
        logging.info(
            "step %d/%d (epoch %.2f) | loss %.4f acc %.4f lr %.4g | %.1f img/s | ETA %s%s", step,
            total_steps, step / steps_per_epoch, summary["train_loss"], summary["train_accuracy"],
            summary["train_learning_rate"], summary["images_per_second"],
            _format_duration(seconds_per_batch * (total_steps - step) / updates_per_batch),
            "".join(f" | {k} {v:.3f}" for k, v in method_summary.items()))
        interval_start, interval_batches = time.perf_counter(), 0

      eval_accuracy = None
      if eval_now:
        eval_start = time.perf_counter()
        eval_summary = evaluate(eval_step, state, eval_batches())
        eval_accuracy = eval_summary["accuracy"]
        record.add_eval(step, eval_summary)
        writer.write_scalars(step, {f"eval_{k}": v for k, v in eval_summary.items()})
        logging.info("eval at step %d on %s: loss %.4f accuracy %.4f (%.1f s)", step,
                     config.eval_split, eval_summary["loss"], eval_accuracy,
                     time.perf_counter() - eval_start)
        interval_start += time.perf_counter() - eval_start  # throughput excludes evaluation
      if save_now:
        checkpointer.save(state, eval_accuracy)
        record.write(step)
  finally:
    checkpointer.wait_until_finished()
    writer.flush()
  if train_step._cache_size() != 1:  # pylint: disable=protected-access
    logging.warning("The train step was compiled %d times.", train_step._cache_size())
  record.write(step)
  logging.info("Done at step %d; best checkpoint: step %s.", step, checkpointer.best_step())
  checkpointer.close()
  return state
