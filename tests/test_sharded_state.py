"""Per-example method state split over the `data` axis, not replicated: Free-AT's carried
perturbation laid out with the batch, ODG-Q's memory table split by training example."""
import jax
import numpy as np
import pytest

from odgq_jax import methods
from odgq_jax import parallel
from tests import test_memory
from tests import test_train


def assert_split_by_rows(leaf, mesh):
  """`leaf` is split along its leading axis over `data`: each device holds its 1/D of the rows."""
  assert leaf.sharding.is_equivalent_to(parallel.batch_sharding(mesh), leaf.ndim)
  assert {shard.data.shape for shard in leaf.addressable_shards} == {
      (leaf.shape[0] // mesh.size, *leaf.shape[1:])}


def free_at_config():
  config = test_train.tiny_config()
  config.method = methods.method_config("free_at", replays=2)
  return config


def test_free_at_perturbation_is_split_over_the_devices_like_the_batch():
  mesh = parallel.create_mesh(jax.devices()[:4])
  state, _, train_step = test_train.run_method_steps(mesh, 2, free_at_config())
  delta = state.method_state["delta"]
  assert delta.shape[0] == test_train.BATCH
  assert_split_by_rows(delta, mesh)  # each device holds its own quarter of the examples' rows
  assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state.params))
  assert train_step._cache_size() == 1  # the layout is the same in and out: compiled once


def test_free_at_on_four_devices_matches_one_device():
  config = free_at_config()
  test_train.assert_four_devices_match_one_device(config)


def test_a_checkpoint_restores_the_perturbation_split_over_the_devices(tmp_path):
  mesh = parallel.create_mesh(jax.devices()[:4])
  config = free_at_config()
  method = methods.create_method_for_run(config)
  state, _, train_step = test_train.run_method_steps(mesh, 2, config)
  checkpointer = test_train.save_checkpoint(state, tmp_path)
  template, _ = test_train.make_state(config, mesh, method=method,
                                      num_train_examples=test_train.BATCH * 2)
  restored = checkpointer.restore(template)
  delta = restored.method_state["delta"]
  assert_split_by_rows(delta, mesh)
  np.testing.assert_array_equal(delta, state.method_state["delta"])
  continued, _ = train_step(restored, parallel.make_global_batch(
      test_train.synthetic_batches(1)[0], mesh))
  assert_split_by_rows(continued.method_state["delta"], mesh)


def test_a_per_example_key_the_state_lacks_is_an_error():
  method = methods.create_method(methods.method_config("free_at"))
  with pytest.raises(ValueError, match=r"per_example_state names \['delta'\]"):
    method.method_state_sharding({}, parallel.create_mesh(jax.devices()[:1]))


def test_the_memory_tables_are_split_over_the_devices_by_training_example(tmp_path):
  mesh = parallel.create_mesh(jax.devices()[:4])
  config = test_memory.memory_config(memory_momentum=0.5)
  method = methods.create_method_for_run(config)
  state, _, train_step = test_memory.run_memory_steps(mesh, 2, config)
  tables = ("memory", "memory_visited", "memory_momentum")
  for name in tables:  # each device holds a quarter of the 40 examples' rows
    assert_split_by_rows(state.method_state[name], mesh)
  assert train_step._cache_size() == 1
  checkpointer = test_train.save_checkpoint(state, tmp_path)
  template, _ = test_train.make_state(config, mesh, method=method,
                                      num_train_examples=test_memory.NUM_EXAMPLES)
  restored = checkpointer.restore(template)
  for name in tables:
    assert_split_by_rows(restored.method_state[name], mesh)
  batch = parallel.make_global_batch(test_memory.geometry_batches(3)[2], mesh)
  continued, _ = train_step(restored, batch)
  uninterrupted, _ = train_step(state, batch)
  for name in tables:
    np.testing.assert_array_equal(continued.method_state[name],
                                  uninterrupted.method_state[name])


def test_a_training_split_the_devices_do_not_divide_is_an_error_naming_a_split_that_fits():
  method = methods.create_method(test_memory.memory_config().method)
  method_state = method.init_method_state((16, 8, 8, 3), num_classes=10, num_train_examples=42)
  with pytest.raises(ValueError, match=r"'memory' has one row per example \(42 rows\).*4 "
                     r"devices.*train\[:40\]"):
    method.method_state_sharding(method_state, parallel.create_mesh(jax.devices()[:4]))
