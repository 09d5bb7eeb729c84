"""ODG-Q's memory domain: the crop geometry, the per-example table and its updates, in the step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from odgq_jax import methods
from odgq_jax import parallel
from odgq_jax import train
from odgq_jax.data import crop_flip
from odgq_jax.methods import perturbation_memory as memory
from tests import test_train

EPS = 8 / 255
NUM_EXAMPLES = 40  # the synthetic training split: 40 examples, batches of test_train.BATCH


def geometry_batches(num_batches, seed=0):
  """test_train's synthetic batches with the index and crop geometry of a shuffled split."""
  rng = np.random.default_rng(seed)
  batches = test_train.synthetic_batches(num_batches, seed)
  order = np.concatenate([rng.permutation(NUM_EXAMPLES) for _ in range(num_batches)])
  for b, batch in enumerate(batches):
    batch["index"] = order[b * test_train.BATCH:(b + 1) * test_train.BATCH].astype(np.int32)
    batch["crop_offset"] = rng.integers(0, 9, (test_train.BATCH, 2)).astype(np.int32)
    batch["flip"] = rng.integers(0, 2, test_train.BATCH).astype(bool)
  return batches


def memory_config(**overrides):
  config = test_train.tiny_config()
  options = dict(domains=("memory",), global_step_sizes=(), replays=1)
  options.update(overrides)
  config.method = methods.method_config("odgq", **options)
  return config


def run_memory_steps(mesh, num_batches, config):
  return test_train.run_method_steps(mesh, num_batches, config, geometry_batches(num_batches),
                                     NUM_EXAMPLES)


def test_the_stored_frame_map_is_the_transpose_of_the_crop_and_flip():
  key = jax.random.PRNGKey(0)
  stored = jax.random.normal(key, (3, 8, 8, 2))
  augmented = jax.random.normal(jax.random.fold_in(key, 1), (3, 8, 8, 2))
  offset = jnp.array([[0, 8], [4, 4], [7, 1]])
  flip = jnp.array([True, False, True])
  forward = crop_flip.to_augmented_frame(stored, offset, flip)
  back = crop_flip.to_stored_frame(augmented, offset, flip)
  visible = crop_flip.visible_in_stored_frame(augmented.shape, offset, flip)
  np.testing.assert_allclose(jnp.vdot(forward, augmented), jnp.vdot(stored, back), rtol=1e-5)
  # The identity crop shows everything; a crop at (0, 8) cuts 4 rows and 4 columns away.
  assert float(visible[1].min()) == 1.0
  assert float(visible[0].sum()) == 4 * 4 * 2
  np.testing.assert_array_equal(back[1], augmented[1])
  # Pixels the crop kept go back to where they came from: for (0, 8) and a flip, the augmented
  # image shows stored rows 0..3 and columns 4..7 in its bottom-right quarter.
  np.testing.assert_allclose(crop_flip.to_augmented_frame(back, offset, flip)[0, 4:, 4:],
                             augmented[0, 4:, 4:])
  np.testing.assert_allclose(forward[0, 4:, 4:], stored[0, :4, 4:][:, ::-1])


def test_storage_is_int8_exactly_when_eps_and_step_are_on_the_pixel_lattice():
  assert memory.storage_dtype(8 / 255, 2 / 255, eps_warmup=False) == jnp.int8
  assert memory.storage_dtype(8 / 255, 0.01, eps_warmup=False) == jnp.float32
  assert memory.storage_dtype(0.03, 2 / 255, eps_warmup=False) == jnp.float32
  assert memory.storage_dtype(8 / 255, 2 / 255, eps_warmup=True) == jnp.float32


@pytest.mark.parametrize("dtype", [jnp.int8, jnp.float32])
def test_an_update_steps_chosen_rows_where_visible_and_keeps_everything_else(dtype):
  state = memory.init_memory(6, (8, 8, 1), dtype, momentum=False)
  batch = {"image": jnp.full((2, 8, 8, 1), 0.5), "index": jnp.array([4, 1]),
           "crop_offset": jnp.array([[4, 4], [0, 0]]), "flip": jnp.array([False, False])}
  rows = memory.stored_perturbations(state, batch, jax.random.PRNGKey(0), EPS, "zero")
  used = memory.to_augmented_frame(rows, batch)
  grad = jnp.ones((2, 8, 8, 1))
  chose = jnp.array([1.0, 1.0])
  for _ in range(3):
    state = memory.update(state, batch, rows, chose, used, grad, step_size=2 / 255, eps=EPS,
                          momentum=0.0)
    rows = memory.stored_perturbations(state, batch, jax.random.PRNGKey(0), EPS, "zero")
    used = memory.to_augmented_frame(rows, batch)
  table = np.asarray(memory.stored_values(state["memory"]))
  np.testing.assert_allclose(table[4], 6 / 255, rtol=1e-6)  # identity crop: every pixel stepped
  # Example 1 was cropped at (0, 0): its last 4 rows and columns were cut away and keep zero.
  np.testing.assert_allclose(table[1, :4, :4], 6 / 255, rtol=1e-6)
  assert not table[1, 4:].any() and not table[1, :, 4:].any()
  assert not table[[0, 2, 3, 5]].any()
  np.testing.assert_array_equal(state["memory_visited"], [0, 1, 0, 0, 1, 0])
  # A row not chosen this time keeps its value.
  kept = memory.update(state, batch, rows, jnp.array([0.0, 0.0]), used, -grad,
                       step_size=2 / 255, eps=EPS, momentum=0.0)
  np.testing.assert_array_equal(kept["memory"], state["memory"])


def test_int8_storage_is_exact_and_the_table_stays_in_the_ball_and_the_box():
  # On the 1/255 lattice, int8 storage changes nothing: it tracks a float32 table exactly.
  key = jax.random.PRNGKey(0)
  tables = {dtype: memory.init_memory(4, (8, 8, 3), dtype, momentum=False)
            for dtype in (jnp.int8, jnp.float32)}
  images = jnp.round(jax.random.uniform(key, (4, 8, 8, 3)) * 255) / 255
  for step in range(12):
    step_key = jax.random.fold_in(key, step)
    batch = {"image": images, "index": jnp.arange(4),
             "crop_offset": jax.random.randint(step_key, (4, 2), 0, 9),
             "flip": jax.random.bernoulli(step_key, 0.5, (4,))}
    batch["image"] = crop_flip.to_augmented_frame(images, batch["crop_offset"], batch["flip"])
    grad = jax.random.normal(jax.random.fold_in(step_key, 1), images.shape)
    for dtype, state in tables.items():
      rows = memory.stored_perturbations(state, batch, key, EPS, "zero")
      used = jnp.clip(batch["image"] + memory.to_augmented_frame(rows, batch), 0, 1) - batch[
          "image"]
      tables[dtype] = memory.update(state, batch, rows, jnp.ones(4), used, grad,
                                    step_size=2 / 255, eps=EPS, momentum=0.0)
  exact = np.asarray(tables[jnp.int8]["memory"]).astype(np.float64) / 255
  floating = np.asarray(tables[jnp.float32]["memory"])
  np.testing.assert_allclose(exact, floating, atol=1e-6)
  assert np.abs(exact).max() <= EPS + 1e-9
  assert 0 <= (images + exact).min() + 1e-6 and (images + exact).max() <= 1 + 1e-6


def test_momentum_keeps_stepping_along_a_gradient_that_changes_sign_once():
  state = memory.init_memory(1, (1, 1, 1), jnp.float32, momentum=True)
  batch = {"image": jnp.full((1, 1, 1, 1), 0.5), "index": jnp.array([0]),
           "crop_offset": jnp.array([[4, 4]]), "flip": jnp.array([False])}
  for grad in (1.0, 1.0, -1.0):
    rows = memory.stored_perturbations(state, batch, jax.random.PRNGKey(0), EPS, "zero")
    state = memory.update(state, batch, rows, jnp.ones(1), rows, jnp.full((1, 1, 1, 1), grad),
                          step_size=1 / 255, eps=EPS, momentum=0.9)
  # v = 1, 1.9, 0.71 > 0: three steps up, where plain sign steps would give 1/255.
  np.testing.assert_allclose(state["memory"][0, 0, 0, 0], 3 / 255, rtol=1e-5)


def test_odgq_with_the_memory_domain_trains_fills_the_table_and_compiles_once():
  mesh = parallel.create_mesh(jax.devices()[:1])
  state, losses, train_step = run_memory_steps(mesh, 10, memory_config(memory_step_size=2 / 255))
  table = state.method_state["memory"]
  assert table.dtype == jnp.int8 and table.shape == (NUM_EXAMPLES, 8, 8, 3)
  assert bool(state.method_state["memory_visited"].all())  # 10 batches of 16 cover all 40
  assert 0 < int(jnp.abs(table.astype(jnp.int32)).max()) <= 8
  assert np.mean(losses[-3:]) < np.mean(losses[:3])
  assert train_step._cache_size() == 1


def test_an_unprojected_fresh_step_trains_and_the_table_stays_exact_in_the_eps_ball():
  mesh = parallel.create_mesh(jax.devices()[:1])
  config = memory_config(beta=0.0, fresh_step_fraction=0.5, fresh_step_projection=False)
  state, losses, train_step = run_memory_steps(mesh, 4, config)
  assert np.all(np.isfinite(losses))
  table = state.method_state["memory"]
  assert table.dtype == jnp.int8
  assert 0 < int(jnp.abs(table.astype(jnp.int32)).max()) <= round(EPS * 255)
  assert train_step._cache_size() == 1


def test_the_memory_domain_on_four_devices_matches_one_device():
  config = memory_config(domains=("memory", "random"), global_step_sizes=(), replays=2,
                         selection="per_example", memory_momentum=0.5)
  # The momentum divides each example's gradient by its mean magnitude, which magnifies the
  # summation-order rounding of a 4-way split on some CPUs; the table it steers must agree exactly.
  state1, state4 = test_train.assert_four_devices_match_one_device(
      config, batches=geometry_batches(3), num_train_examples=NUM_EXAMPLES, rtol=1e-3, atol=1e-3,
      method_state_atol={"memory_momentum": 5e-2})
  np.testing.assert_array_equal(state1.method_state["memory"], state4.method_state["memory"])
  np.testing.assert_array_equal(state1.method_state["memory_visited"],
                                state4.method_state["memory_visited"])


def test_the_table_round_trips_through_a_checkpoint_and_the_run_continues_identically(tmp_path):
  mesh = parallel.create_mesh(jax.devices()[:1])
  config = memory_config()
  method = methods.create_method(config.method)
  state, _, train_step = run_memory_steps(mesh, 2, config)
  checkpointer = test_train.save_checkpoint(state, tmp_path)
  template, _ = test_train.make_state(config, mesh, method=method,
                                      num_train_examples=NUM_EXAMPLES)
  restored = checkpointer.restore(template)
  for name in state.method_state:
    np.testing.assert_array_equal(restored.method_state[name], state.method_state[name])
  batch = parallel.make_global_batch(geometry_batches(3)[2], mesh)
  continued, _ = train_step(restored, batch)
  uninterrupted, _ = train_step(state, batch)
  for a, b in zip(jax.tree.leaves(continued), jax.tree.leaves(uninterrupted)):
    np.testing.assert_array_equal(a, b)


def test_the_memory_domain_needs_the_crop_geometry_and_a_table_that_fits():
  mesh = parallel.create_mesh(jax.devices()[:1])
  config = memory_config()
  method = methods.create_method_for_run(config)
  state, lr_fn = test_train.make_state(config, mesh, method=method,
                                       num_train_examples=NUM_EXAMPLES)
  train_step, _ = train.compile_steps(mesh, method, lr_fn)
  batch = parallel.make_global_batch(test_train.synthetic_batches(1)[0], mesh)
  with pytest.raises(ValueError, match="memory domain needs train batches with.*imagenet"):
    train_step(state, batch)
  with pytest.raises(ValueError, match=r"memory domain needs a table of 1281167 x \(224, 224, 3\)"):
    method.init_method_state((256, 224, 224, 3), num_classes=1000, num_train_examples=1281167)


@pytest.mark.parametrize("options,message", [
    ({"domains": ("memory", "memory"), "global_step_sizes": ()}, "at most one 'memory' domain"),
    ({"memory_initialization": "gaussian"}, "memory_initialization must be one of"),
    ({"memory_momentum": -0.1}, "memory_momentum must be a number >= 0"),
    ({"memory_step_size": 0.0}, r"step_size must be in \(0, 1\]")])
def test_bad_memory_options_are_errors(options, message):
  with pytest.raises(ValueError, match=message):
    methods.create_method(methods.method_config("odgq", **options))
