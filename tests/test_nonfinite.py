"""The non-finite guard: a diverging or NaN-fed run stops with an error naming the step and the
quantity, and never saves a non-finite state; damaged checkpoints make the launchers print one line.
"""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import smoke
from odgq_jax import checkpointing
from odgq_jax import methods
from odgq_jax import parallel
from odgq_jax import train
from odgq_jax.data import input_pipeline
from odgq_jax.train import nonfinite
from tests import offline_data
from tests import test_launch
from tests import test_train

NUM_STEPS = 8


def test_a_nan_in_a_batch_is_caught_at_its_step():
  mesh = parallel.create_mesh(jax.devices()[:4])
  config = test_train.tiny_config()
  state, lr_fn = test_train.make_state(config, mesh)
  train_step, _ = train.compile_steps(mesh, methods.create_method(config.method), lr_fn)
  batches = test_train.synthetic_batches(4)
  batches[2]["image"][5, 1, 2, 0] = np.nan
  record = None
  for batch in batches:
    state, metrics = train_step(state, parallel.make_global_batch(batch, mesh))
    record = metrics.nonfinite if record is None else record.merge(metrics.nonfinite)
    if int(state.step) == 2:
      assert nonfinite.describe(record, state.variables) is None
  assert nonfinite.describe(record, state.variables) == "step 3: loss is nan"
  assert "nonfinite" not in metrics.compute()  # checked, not logged


def test_the_record_keeps_the_first_non_finite_step_and_names_the_variable():
  variables = {"params": {"conv": {"kernel": jnp.ones((2, 2))}},
               "batch_stats": {"bn": {"mean": jnp.zeros(2)}}}
  record = lambda step, loss, variables: nonfinite.FirstNonFinite.from_model_output(
      step=jnp.int32(step), loss=jnp.float32(loss), variables=variables)
  finite = record(6, 0.5, variables)
  assert nonfinite.describe(finite, variables) is None
  bad_kernel = {**variables, "params": {"conv": {"kernel": jnp.full((2, 2), jnp.inf)}}}
  bad_mean = {**variables, "batch_stats": {"bn": {"mean": jnp.array([0.0, jnp.nan])}}}
  merged = finite.merge(record(7, 0.4, bad_kernel)).merge(record(8, math.inf, bad_mean))
  assert nonfinite.describe(merged, variables) == (
      "step 7: parameter conv/kernel has non-finite values")
  assert nonfinite.describe(record(9, 0.3, bad_mean), variables) == (
      "step 9: BatchNorm statistic bn/mean has non-finite values")


def run_config(**overrides):
  """The smoke run shrunk to NUM_STEPS steps of one minibatch each (an epoch each), evaluated and
  saved at every step."""
  config = smoke.get_config()
  config.batch_size = config.eval_batch_size = 16
  config.train_split, config.eval_split = "train[:16]", "test[:32]"
  config.shuffle_buffer = 16
  config.num_epochs = NUM_STEPS
  config.warmup_epochs = 1  # lr(0) = 0: the first update leaves the parameters finite
  config.log_every_steps = 100
  config.checkpoint_every_steps = 1
  config.update(overrides)
  return config


def saved_variables(workdir):
  """{step: restored model variables} of every checkpoint in `workdir`."""
  directory = Path(workdir) / checkpointing.CHECKPOINT_SUBDIR
  return {int(p.name): ocp.StandardCheckpointer().restore(p / "default")
          for p in directory.iterdir() if p.name.isdigit()}


def assert_all_finite(workdir):
  """Asserts that every checkpoint in `workdir` is finite; returns their steps."""
  saved = saved_variables(workdir)
  for step, state in saved.items():
    for leaf in jax.tree.leaves((state["params"], state["batch_stats"])):
      assert np.all(np.isfinite(leaf)), f"checkpoint {step} is not finite"
  return sorted(saved)


def stopped_step(error):
  return int(str(error.value).split(":")[0].removeprefix("step "))


@offline_data.requires_offline_cifar10
def test_a_diverging_learning_rate_stops_the_run_without_saving_a_non_finite_state(tmp_path):
  config = run_config(learning_rate=1e12)
  with pytest.raises(nonfinite.NonFiniteError,
                     match=r"^step \d+: (loss is (nan|inf)|.+ has non-finite values)") as error:
    train.train_and_evaluate(config, str(tmp_path))
  saved = assert_all_finite(tmp_path)
  assert saved and saved[-1] < stopped_step(error)
  assert checkpointing.Checkpointer(str(tmp_path), read_only=True).best_step() in saved


@offline_data.requires_offline_cifar10
def test_a_nan_batch_stops_the_run_at_its_step_and_the_run_resumes_before_it(tmp_path,
                                                                              monkeypatch):
  config = run_config()
  clean_batches = input_pipeline.train_batches

  def batches_with_a_nan(config, start_step=0):
    for position, batch in enumerate(clean_batches(config, start_step=start_step),
                                     start=start_step):
      if position == 2:  # the minibatch of step 3
        batch["image"][0, 0, 0, 0] = np.nan
      yield batch

  monkeypatch.setattr(input_pipeline, "train_batches", batches_with_a_nan)
  with pytest.raises(nonfinite.NonFiniteError) as error:
    train.train_and_evaluate(config, str(tmp_path))
  directory = os.path.join(tmp_path, checkpointing.CHECKPOINT_SUBDIR)
  # Which quantity shows the NaN first depends on how the quantized layers treat it.
  assert re.fullmatch(
      r"step 3: (loss is nan|BatchNorm statistic \S+ has non-finite values.*); the run stopped "
      rf"without saving this state \(the latest checkpoint, step 2 in {re.escape(directory)}, is "
      r"the last finite state\)", str(error.value)), str(error.value)
  assert assert_all_finite(tmp_path) == [1, 2]
  best = checkpointing.Checkpointer(str(tmp_path), read_only=True).best_step()
  assert best in (1, 2)

  monkeypatch.setattr(input_pipeline, "train_batches", clean_batches)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == NUM_STEPS
  assert_all_finite(tmp_path)


# The smoke config cut to 4 steps of 32 images: checkpoints at steps 2 (evaluated) and 4.
TINY_LAUNCH = {"train_split": "train[:64]", "eval_split": "test[:32]", "batch_size": 32,
               "eval_batch_size": 32, "checkpoint_every_steps": 2}


def launch_flags(**overrides):
  return [f"--config.{key}={value}" for key, value in (TINY_LAUNCH | overrides).items()]


def error_lines(output):
  return [line for line in output.splitlines() if line.startswith("error: ")]


def assert_one_clear_line(output):
  assert len(error_lines(output)) == 1, output
  assert "Traceback" not in output and "Event loop is closed" not in output, output
  return error_lines(output)[0]


def run_eval(workdir, *flags):
  proc = subprocess.run(
      [sys.executable, str(test_launch.REPO / "launch" / "eval.py"), "--checkpoint", str(workdir),
       *flags], cwd=test_launch.REPO, capture_output=True, text=True, timeout=900,
      env=test_launch.launch_environment())
  return proc.returncode, proc.stdout + proc.stderr


@offline_data.requires_offline_cifar10
def test_the_launcher_stops_a_diverging_run_with_one_line_and_exit_status_1(tmp_path):
  code, output = test_launch.run_to_end(tmp_path, *launch_flags(learning_rate=1e12))
  assert code == 1, output
  assert re.match(r"error: step \d+: .+; the run stopped without saving this state",
                  assert_one_clear_line(output)), output
  assert_all_finite(tmp_path)


@offline_data.requires_offline_cifar10
def test_a_truncated_checkpoint_file_is_one_line_naming_the_checkpoints_to_use(tmp_path):
  # The run the launcher would make, made here (the same config.json, so it can resume).
  config = smoke.get_config()
  config.update(TINY_LAUNCH)
  train.train_and_evaluate(config, str(tmp_path))
  assert test_launch.finished_steps(tmp_path) == [2, 4]
  damaged = tmp_path / checkpointing.CHECKPOINT_SUBDIR / "4"
  for path in (damaged / "default").rglob("*"):  # the state's files, each cut to half its size
    if path.is_file():
      os.truncate(path, path.stat().st_size // 2)
  expected = (rf"error: checkpoint {re.escape(str(damaged))} cannot be restored \(.+\); other "
              rf"checkpoints: step 2 \(evaluate one with launch/eval.py --step N, or delete "
              rf"{re.escape(str(damaged))} to resume training from the latest\)")

  code, output = test_launch.run_to_end(tmp_path, *launch_flags())
  assert code == 1, output
  assert re.fullmatch(expected, assert_one_clear_line(output)), output
  report = tmp_path / "eval" / "report.json"
  quick_pgd20 = ("--attacks", "pgd20", "--num_examples", "8", "--batch_size", "8", "--output",
                 str(report))
  code, output = run_eval(tmp_path, *quick_pgd20)
  assert code == 1, output
  assert re.fullmatch(expected, assert_one_clear_line(output)), output

  code, output = run_eval(tmp_path, "--step", "2", *quick_pgd20)
  assert code == 0, output
  assert json.loads(report.read_text())["checkpoint"]["step"] == 2
