"""The train state, optimizer, compiled steps and checkpoints, on a tiny model and synthetic
data."""
import copy
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_config
from configs import smoke
from odgq_jax import checkpointing
from odgq_jax import methods
from odgq_jax import models
from odgq_jax import parallel
from odgq_jax import train
from tests import offline_data

BATCH = 16


def tiny_config():
  config = default_config.get_config()
  config.model.name = "tiny"
  default_config.quantize_model(config, weight_bits=4, act_bits=4)
  config.num_epochs = 1
  config.warmup_epochs = 0.0
  config.learning_rate = 0.1
  return config


def synthetic_batches(num_batches, seed=0):
  """Learnable synthetic data: the label is which image quadrant is brightest."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(num_batches):
    images = rng.uniform(0, 0.5, size=(BATCH, 8, 8, 3)).astype(np.float32)
    labels = rng.integers(0, 4, size=BATCH).astype(np.int32)
    for i, label in enumerate(labels):
      r, c = divmod(int(label), 2)
      images[i, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 0.5
    out.append({"image": images, "label": labels})
  return out


def make_state(config, mesh, steps_per_epoch=40, method=None, num_train_examples=None):
  """The initial train state; with `method`, its state is laid out as the training loop does."""
  model = models.create_model_for_run(config, num_classes=4)
  lr_fn = train.create_learning_rate_fn(config, steps_per_epoch)
  tx = train.create_optimizer(config, lr_fn)
  sample = parallel.make_global_batch(synthetic_batches(1)[0], mesh)["image"]
  method_state = method_state_sharding = None
  if method is not None:
    method_state = method.init_method_state(sample.shape, num_classes=4,
                                            num_train_examples=num_train_examples)
    method_state_sharding = method.method_state_sharding(method_state, mesh)
  state = train.create_train_state(jax.random.PRNGKey(0), model, tx, sample, mesh, method_state,
                                   method_state_sharding)
  return state, lr_fn


def run_steps(mesh, num_steps, config=None):
  config = config or tiny_config()
  state, lr_fn = make_state(config, mesh)
  train_step, _ = train.compile_steps(mesh, methods.create_method(config.method), lr_fn)
  losses = []
  for batch in synthetic_batches(num_steps):
    state, metrics = train_step(state, parallel.make_global_batch(batch, mesh))
    losses.append(float(metrics.compute()["loss"]))
  return state, losses, train_step


def run_method_steps(mesh, num_batches, config, batches=None, num_train_examples=None):
  """Trains with `config.method` on `batches` (default: synthetic ones) from a training split of
  `num_train_examples` (default: the batches' examples): (state, losses, jitted train step)."""
  method = methods.create_method_for_run(config)
  state, lr_fn = make_state(config, mesh, method=method,
                            num_train_examples=num_train_examples or BATCH * num_batches)
  train_step, _ = train.compile_steps(mesh, method, lr_fn)
  losses = []
  for batch in batches or synthetic_batches(num_batches):
    state, metrics = train_step(state, parallel.make_global_batch(batch, mesh))
    losses.append(float(metrics.compute()["loss"]))
  return state, losses, train_step


def assert_four_devices_match_one_device(config, num_batches=3, batches=None,
                                         num_train_examples=None, rtol=1e-4, atol=1e-5,
                                         method_state_atol=None):
  """Runs `config.method` on a 1-device and a 4-device mesh and asserts that the losses (rtol
  1e-4), the parameters and the method state agree within `rtol` and `atol`; a method-state entry
  named in `method_state_atol` is compared within its own absolute tolerance instead. Returns the
  two final states."""
  one_device, four_devices = (parallel.create_mesh(jax.devices()[:n]) for n in (1, 4))
  state1, losses1, _ = run_method_steps(one_device, num_batches, config, batches,
                                        num_train_examples)
  state4, losses4, _ = run_method_steps(four_devices, num_batches, config, batches,
                                        num_train_examples)
  np.testing.assert_allclose(losses1, losses4, rtol=1e-4)
  assert state1.method_state.keys() == state4.method_state.keys()
  for a, b in zip(jax.tree.leaves(state1.params), jax.tree.leaves(state4.params)):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
  method_state_atol = method_state_atol or {}
  for key in state1.method_state:
    tolerance = ({"atol": method_state_atol[key]} if key in method_state_atol
                 else {"rtol": rtol, "atol": atol})
    for a, b in zip(jax.tree.leaves(state1.method_state[key]),
                    jax.tree.leaves(state4.method_state[key])):
      np.testing.assert_allclose(a, b, **tolerance)
  return state1, state4


def test_learning_rate_schedule_warms_up_then_decays_to_zero():
  config = tiny_config()
  config.num_epochs, config.warmup_epochs, config.learning_rate = 4, 1, 0.1
  lr = train.create_learning_rate_fn(config, steps_per_epoch=10)
  assert float(lr(0)) == 0.0
  assert float(lr(5)) == pytest.approx(0.05)
  assert float(lr(10)) == pytest.approx(0.1)
  assert float(lr(25)) == pytest.approx(0.05, abs=1e-6)
  assert float(lr(40)) == pytest.approx(0.0, abs=1e-7)


def test_warmup_longer_than_training_is_an_error():
  config = tiny_config()
  config.num_epochs, config.warmup_epochs = 1, 2
  with pytest.raises(ValueError, match="warmup_epochs"):
    train.create_learning_rate_fn(config, steps_per_epoch=10)


def test_weight_decay_only_on_kernels():
  state, _ = make_state(tiny_config(), parallel.create_mesh(jax.devices()[:1]))
  mask = train.optimizer.weight_decay_mask(state.params)
  flat = jax.tree_util.tree_flatten_with_path(mask)[0]
  decayed = {jax.tree_util.keystr(path) for path, m in flat if m}
  not_decayed = {jax.tree_util.keystr(path) for path, m in flat if not m}
  assert decayed and all(p.endswith("['kernel']") for p in decayed)
  assert any("step" in p for p in not_decayed)  # LSQ step sizes are not decayed
  assert any("scale" in p for p in not_decayed)  # nor BatchNorm scales


def test_adam_takes_steps_of_about_the_learning_rate_and_an_unknown_optimizer_is_an_error():
  config = tiny_config()
  config.optimizer, config.weight_decay = "adam", 0.0
  tx = train.create_optimizer(config, lambda count: 0.01)
  params = {"kernel": jnp.ones((3,))}
  updates, _ = tx.update({"kernel": jnp.array([1e-3, -5.0, 20.0])}, tx.init(params), params)
  # Adam's first step is lr * sign(g) whatever the gradient's scale, unlike SGD's lr * g
  np.testing.assert_allclose(updates["kernel"], [-0.01, 0.01, -0.01], rtol=1e-3)
  config.optimizer = "lamb"
  with pytest.raises(ValueError, match=r"optimizer must be one of \('sgd', 'adam'\), got 'lamb'"):
    train.create_optimizer(config, lambda count: 0.01)


def test_a_few_steps_reduce_the_loss():
  _, losses, _ = run_steps(parallel.create_mesh(jax.devices()[:1]), 30)
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_four_devices_match_one_device_and_compile_once():
  assert jax.device_count() >= 4, "tests/conftest.py sets 4 fake CPU devices"
  state1, losses1, _ = run_steps(parallel.create_mesh(jax.devices()[:1]), 4)
  state4, losses4, step4 = run_steps(parallel.create_mesh(jax.devices()[:4]), 4)
  np.testing.assert_allclose(losses1, losses4, rtol=1e-4)
  for a, b in zip(jax.tree.leaves(state1.params), jax.tree.leaves(state4.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree.leaves(state1.batch_stats), jax.tree.leaves(state4.batch_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert step4._cache_size() == 1  # compiled once for all four steps


def test_batch_that_does_not_split_over_devices_is_an_error():
  with pytest.raises(ValueError, match="batch_size=6 does not divide evenly over the 4 devices"):
    parallel.check_batch_divides(6, parallel.create_mesh(jax.devices()[:4]))


def test_eval_step_masks_padding():
  mesh = parallel.create_mesh(jax.devices()[:1])
  config = tiny_config()
  state, lr_fn = make_state(config, mesh)
  _, eval_step = train.compile_steps(mesh, methods.create_method(config.method), lr_fn)
  batch = synthetic_batches(1)[0]
  logits = state.apply_fn(state.variables, batch["image"], train=False)
  correct = np.asarray(logits.argmax(-1) == batch["label"])
  mask = np.arange(BATCH) < 5
  result = train.evaluate(eval_step, state, iter([parallel.make_global_batch(
      dict(batch, mask=mask), mesh)]))
  assert result["accuracy"] == pytest.approx(correct[:5].mean())


def save_checkpoint(state, directory):
  """Saves `state` in `directory`, waits for the asynchronous save, returns the checkpointer."""
  checkpointer = checkpointing.Checkpointer(str(directory), keep=2)
  checkpointer.save(state)
  checkpointer.wait_until_finished()
  return checkpointer


def test_checkpoint_round_trip(tmp_path):
  mesh = parallel.create_mesh(jax.devices()[:1])
  state, _, _ = run_steps(mesh, 3)
  checkpointer = save_checkpoint(state, tmp_path)
  fresh, _ = make_state(tiny_config(), mesh)
  restored = checkpointer.restore(fresh)
  assert int(restored.step) == 3
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, b)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
  mesh = parallel.create_mesh(jax.devices()[:1])
  state, _, _ = run_steps(mesh, 2)
  checkpointer = save_checkpoint(state, tmp_path)
  step_dir = os.path.join(checkpointer.directory, "2")
  for root, _, files in os.walk(step_dir):
    for name in files:
      if name != "_CHECKPOINT_METADATA":
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"garbage")
  fresh, _ = make_state(tiny_config(), mesh)
  with pytest.raises(checkpointing.CheckpointError, match="cannot be restored"):
    checkpointing.Checkpointer(str(tmp_path), keep=2).restore(fresh)


def test_the_best_checkpoint_is_the_one_with_the_highest_eval_accuracy(tmp_path):
  state, _ = make_state(tiny_config(), parallel.create_mesh(jax.devices()[:1]))
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=1)
  # Step 3 is saved between evaluations; the best is neither the latest nor the last evaluated.
  for step, accuracy in [(1, 0.3), (2, 0.8), (3, None), (4, 0.5), (5, 0.6)]:
    checkpointer.save(state.replace(step=jnp.asarray(step, state.step.dtype)), accuracy)
    checkpointer.wait_until_finished()
  assert checkpointer.best_step() == 2
  assert sorted(int(d) for d in os.listdir(checkpointer.directory)) == [2, 5]  # best and latest
  checkpointer.close()
  # Known again when the run resumes (or a classifier is loaded), and still ranked.
  resumed = checkpointing.Checkpointer(str(tmp_path), keep=1)
  resumed.save(state.replace(step=jnp.asarray(6, state.step.dtype)), 0.7)
  resumed.wait_until_finished()
  assert resumed.best_step() == 2
  assert int(resumed.restore(state, step=resumed.best_step()).step) == 2
  resumed.save(state.replace(step=jnp.asarray(7, state.step.dtype)), 0.9)
  resumed.wait_until_finished()
  assert resumed.best_step() == 7


def test_missing_step_is_a_clear_error(tmp_path):
  state, _ = make_state(tiny_config(), parallel.create_mesh(jax.devices()[:1]))
  with pytest.raises(checkpointing.CheckpointError, match="no checkpoint for step 7"):
    checkpointing.Checkpointer(str(tmp_path), keep=2).restore(state, step=7)


def test_resuming_with_a_different_config_is_an_error(tmp_path):
  config = tiny_config()
  checkpointing.save_or_check_config(config, str(tmp_path))
  config.log_every_steps = 7  # run control: allowed to change
  checkpointing.save_or_check_config(config, str(tmp_path))
  config.learning_rate = 0.3
  with pytest.raises(checkpointing.CheckpointError, match="learning_rate"):
    checkpointing.save_or_check_config(config, str(tmp_path))


# Resuming through `train_and_evaluate`, on the offline CIFAR-10 copy.


def smoke_replay_config():
  """Free-AT (2 replays) on 256 images: 4 updates in 2 minibatches, a checkpoint after each."""
  config = smoke.get_config()
  config.train_split = "train[:256]"
  config.num_epochs = 1
  config.checkpoint_every_steps = 1
  config.method = methods.method_config("free_at", replays=2)
  return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """(config, workdir) of a finished `smoke_replay_config` run, checkpoints at steps 2 and 4."""
  workdir = tmp_path_factory.mktemp("finished_run")
  config = smoke_replay_config()
  train.train_and_evaluate(config, str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  return config, workdir


def copy_of_run(finished_run, tmp_path):
  config, workdir = finished_run
  copy_dir = tmp_path / "run"
  shutil.copytree(workdir, copy_dir)
  return copy.deepcopy(config), copy_dir


def overwrite_files(directory):
  for root, _, files in os.walk(directory):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")


def corrupt_latest_state(checkpoints):
  overwrite_files(checkpoints / "4" / "default")


def corrupt_latest_metrics(checkpoints):
  overwrite_files(checkpoints / "4" / "metrics")


def interrupt_first_save(checkpoints):
  """What a kill during the first save leaves: its temporary directory only."""
  shutil.rmtree(checkpoints / "4")
  os.rename(checkpoints / "2", checkpoints / f"2{checkpointing.TMP_MARKER}-1700000000")


@offline_data.requires_offline_cifar10
@pytest.mark.parametrize("damage,message", [
    (corrupt_latest_state, r"checkpoint \S+/checkpoints/4 cannot be restored"),
    (corrupt_latest_metrics, r"checkpoints in \S+/checkpoints cannot be restored"),
    (interrupt_first_save, "holds only incomplete checkpoints"),
])
def test_resuming_from_a_damaged_checkpoint_is_an_error(finished_run, tmp_path, damage,
                                                        message):
  config, workdir = copy_of_run(finished_run, tmp_path)
  damage(workdir / "checkpoints")
  left = sorted(os.listdir(workdir / "checkpoints"))
  with pytest.raises(checkpointing.CheckpointError, match=message):
    train.train_and_evaluate(config, str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == left  # no silent restart


@offline_data.requires_offline_cifar10
@pytest.mark.parametrize("change,key", [
    (lambda config: config.model.weight_quantizer.update(bits=2), "model.weight_quantizer.bits"),
    (lambda config: config.method.update(replays=4), "method.replays"),
    (lambda config: setattr(config, "method", methods.method_config("natural")), "method.name"),
])
def test_resuming_with_a_changed_nested_config_key_is_an_error(finished_run, tmp_path, change,
                                                              key):
  config, workdir = copy_of_run(finished_run, tmp_path)
  change(config)
  with pytest.raises(checkpointing.CheckpointError, match=re.escape(key) + ": saved"):
    train.train_and_evaluate(config, str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
