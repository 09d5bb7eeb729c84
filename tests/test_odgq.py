"""ODG-Q: the perturbation bank, selection, alignment, and the method inside the compiled step."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odgq_jax
from configs import smoke
from odgq_jax import methods
from odgq_jax import parallel
from odgq_jax.attacks import projection
from odgq_jax.methods import adversarial
from odgq_jax.methods import alignment
from odgq_jax.methods import base
from odgq_jax.methods import odgq
from odgq_jax.methods import perturbation_bank as bank
from odgq_jax import train
from tests import test_input_pipeline
from tests import test_train

EPS = 8 / 255


def odgq_config(**overrides):
  config = test_train.tiny_config()
  config.method = methods.method_config("odgq", **overrides)
  return config


def test_universal_update_moves_along_the_sign_of_the_batch_mean_gradient():
  universal = jnp.zeros((1, 1, 2, 2, 1))
  grads = jnp.array([[[[1.0], [-3.0]], [[0.5], [0.0]]],
                     [[[1.0], [1.0]], [[-2.0], [0.0]]]])  # two examples
  weights = jnp.array([[1.0, 0.0], [1.0, 0.0]])  # both chose domain 0 (global)
  one_class = jnp.zeros(2, jnp.int32)
  updated = bank.update_universal(universal, weights, grads, (0,), (0.01,), EPS, one_class)
  np.testing.assert_allclose(updated[0, 0, ..., 0], [[0.01, -0.01], [-0.01, 0.0]])
  # A domain nobody chose keeps its perturbation.
  weights = jnp.array([[0.0, 1.0], [0.0, 1.0]])
  np.testing.assert_array_equal(
      bank.update_universal(updated, weights, grads, (0,), (0.01,), EPS, one_class), updated)


def test_class_wise_universal_perturbations_step_on_their_own_class_only():
  universal = jnp.zeros((1, 3, 1, 1, 1))  # one global domain, three classes
  grads = jnp.array([1.0, 2.0, -5.0, 3.0]).reshape(4, 1, 1, 1)
  labels = jnp.array([0, 0, 1, 1])
  weights = jnp.array([[1.0], [1.0], [1.0], [0.0]])  # the last example chose another domain
  updated = bank.update_universal(universal, weights, grads, (0,), (0.01,), EPS, labels)
  # class 0: mean(1, 2) > 0; class 1: only the example that chose it (-5); class 2: no example.
  np.testing.assert_allclose(updated[0, :, 0, 0, 0], [0.01, -0.01, 0.0])
  candidates = bank.universal_candidates(updated, labels)
  np.testing.assert_allclose(candidates[0, :, 0, 0, 0], [0.01, 0.01, -0.01, -0.01])


def test_bank_updates_stay_in_the_eps_ball_and_the_image_box():
  key = jax.random.PRNGKey(0)
  images = jax.random.uniform(key, (4, 8, 8, 3))
  universal = jnp.zeros((1, 1, 8, 8, 3))
  local = jnp.zeros_like(images)
  for i in range(20):
    grads = jax.random.normal(jax.random.fold_in(key, i), images.shape)
    weights = jax.nn.one_hot(jnp.array([0, 1, 0, 1]), 2)
    universal = bank.update_universal(universal, weights, grads, (0,), (4 / 255,), EPS,
                                      jnp.zeros(4, jnp.int32))
    local = bank.update_local(local, grads, images, EPS, EPS)
  assert float(jnp.abs(universal).max()) <= EPS + 1e-7
  assert float(jnp.abs(local).max()) <= EPS + 1e-7
  assert 0.0 <= float((images + local).min()) and float((images + local).max()) <= 1.0


def test_local_update_steps_on_from_the_perturbation_the_replay_used():
  images = jnp.full((2, 2, 2, 1), 0.5)
  used = jnp.stack([jnp.full((2, 2, 1), 0.01), jnp.full((2, 2, 1), -0.02)])  # e.g. two domains
  grads = jnp.array([1.0, -1.0]).reshape(2, 1, 1, 1) * jnp.ones_like(images)
  local = bank.update_local(used, grads, images, 0.005, EPS)
  np.testing.assert_allclose(local[0], 0.015, rtol=1e-5)
  np.testing.assert_allclose(local[1], -0.025, rtol=1e-5)


@pytest.mark.parametrize("selection", ["uniform", "per_example", "loss_weighted"])
def test_selection_frequencies_match_the_policy(selection):
  domain_loss = jnp.array([0.0, 1.0, 2.0, 0.5])
  draws = jax.vmap(lambda key: bank.select_domains(key, selection, 8, domain_loss, 1.0))(
      jax.random.split(jax.random.PRNGKey(0), 4000))
  assert draws.shape == (4000, 8, 4)
  np.testing.assert_array_equal(draws.sum(-1), 1.0)  # one domain per example
  if selection != "per_example":  # one domain for the whole batch
    np.testing.assert_array_equal(draws.min(axis=1), draws.max(axis=1))
  frequencies = np.asarray(draws.mean(axis=(0, 1)))
  expected = (np.asarray(jax.nn.softmax(domain_loss)) if selection == "loss_weighted"
              else np.full(4, 0.25))
  np.testing.assert_allclose(frequencies, expected, atol=0.03)


def test_loss_weighted_selection_measures_every_domain_before_weighing_them():
  # Starting from an unobserved bank, the first four draws visit the four domains once each,
  # whatever their keys, and each first loss is taken as is (not averaged with a made-up start).
  domain_loss = bank.init_bank(0, (2, 2, 1), 4)["domain_loss"]
  chosen = []
  for step, key in enumerate(jax.random.split(jax.random.PRNGKey(0), 4)):
    weights = bank.select_domains(key, "loss_weighted", 3, domain_loss, 0.25)
    chosen.append(int(jnp.argmax(weights[0])))
    domain_loss = bank.update_domain_loss(domain_loss, weights, jnp.full((3,), float(step)))
  assert chosen == [0, 1, 2, 3]
  np.testing.assert_allclose(domain_loss, [0.0, 1.0, 2.0, 3.0])
  # From then on a chosen domain's loss is a running mean; the others keep theirs.
  weights = jax.nn.one_hot(jnp.full((3,), 1), 4)
  updated = bank.update_domain_loss(domain_loss, weights, jnp.full((3,), 2.0))
  np.testing.assert_allclose(updated, [0.0, 0.9 * 1.0 + 0.1 * 2.0, 2.0, 3.0], rtol=1e-6)


@pytest.mark.parametrize("name", sorted(alignment.ALIGNMENTS))
def test_alignment_is_zero_for_identical_predictions_and_positive_otherwise(name):
  logits = jax.random.normal(jax.random.PRNGKey(0), (5, 10))
  align = alignment.ALIGNMENTS[name]
  assert float(align(logits, logits)) == pytest.approx(0.0, abs=1e-6)
  assert float(align(logits, logits[::-1])) > 0.01


def test_bad_options_are_errors():
  with pytest.raises(ValueError, match="domains must be each one of"):
    methods.create_method(methods.method_config("odgq", domains=("global", "universal")))
  with pytest.raises(ValueError, match="one step size per 'global' domain"):
    methods.create_method(methods.method_config("odgq", global_step_sizes=(0.01,)))
  with pytest.raises(ValueError, match="global_step_sizes must be numbers.*give decimals"):
    # what `--config.method.global_step_sizes="(1/255,4/255)"` makes of the tuple
    methods.create_method(methods.method_config("odgq", global_step_sizes=("(1/255,4/255)",)))
  with pytest.raises(ValueError, match=r"step_size must be in \(0, 1\], got 2.0"):
    methods.create_method(methods.method_config("odgq", global_step_sizes=(0.01, 2.0)))
  with pytest.raises(ValueError, match="local_carry_over needs a 'local' domain"):
    methods.create_method(methods.method_config("odgq", domains=("global", "random"),
                                                global_step_sizes=(0.01,), local_carry_over=True))
  with pytest.raises(ValueError, match="selection must be one of"):
    methods.create_method(methods.method_config("odgq", selection="roulette"))
  with pytest.raises(ValueError, match="has no option"):
    methods.method_config("odgq", bogus=1)


def test_odgq_trains_fills_the_bank_and_compiles_once():
  mesh = parallel.create_mesh(jax.devices()[:1])
  state, losses, train_step = test_train.run_method_steps(mesh, 12, odgq_config(replays=2))
  assert int(state.step) == 24  # two updates per minibatch
  assert np.mean(losses[-3:]) < np.mean(losses[:3])
  universal = state.method_state["universal"]
  assert universal.shape == (2, 1, 8, 8, 3)
  assert 0 < float(jnp.abs(universal).max()) <= EPS + 1e-7
  assert train_step._cache_size() == 1  # the selected domain changed; no retracing


def test_eps_warmup_keeps_the_bank_inside_the_growing_ball_and_compiles_once():
  mesh = parallel.create_mesh(jax.devices()[:1])
  config = odgq_config(replays=2, local_carry_over=True, eps_warmup_updates=100)
  state, _, train_step = test_train.run_method_steps(mesh, 2, config)
  # Updates 0..3 ran; the last one projected onto the ball of radius eps * 4 / 100.
  radius = EPS * 4 / 100
  for name in ("universal", "local"):
    assert 0 < float(jnp.abs(state.method_state[name]).max()) <= radius + 1e-7, name
  assert train_step._cache_size() == 1  # the radius is traced, not a compile-time constant


def linear_classification(num_examples):
  """Random 4x4x3 images, a random linear classifier over them and labels: (images, f, labels)."""
  images = jax.random.uniform(jax.random.PRNGKey(0), (num_examples, 4, 4, 3))
  weights = jax.random.normal(jax.random.PRNGKey(1), (48, 10))
  logits_fn = lambda x: x.reshape(x.shape[0], -1) @ weights
  return images, logits_fn, jnp.arange(num_examples) % 10


def test_fresh_step_moves_p_of_every_q_examples_by_one_fgsm_step_from_their_perturbation():
  images, logits_fn, labels = linear_classification(12)
  start = jnp.clip(images + 1 / 255, 0, 1)
  stepped = odgq.fresh_sign_step(logits_fn, images, start, labels, fraction=2 / 3, eps=EPS,
                                 step_size=4 / 255)
  chosen = np.array([r for r in range(12) if r % 3 < 2])
  others = np.array([r for r in range(12) if r % 3 == 2])
  np.testing.assert_array_equal(stepped[others], start[others])
  expected = adversarial.sign_gradient_ascent(
      lambda x: jnp.sum(base.cross_entropy(logits_fn(x), labels[chosen])), images[chosen],
      start[chosen], eps=EPS, step_size=4 / 255, num_steps=1)
  np.testing.assert_allclose(stepped[chosen], expected, atol=1e-7)
  assert float(jnp.abs(stepped - images).max()) <= EPS + 1e-6
  with pytest.raises(ValueError, match="the batch of 12 is not a multiple of 8"):
    odgq.fresh_sign_step(logits_fn, images, start, labels, fraction=5 / 8, eps=EPS,
                         step_size=4 / 255)


def test_an_unprojected_fresh_step_keeps_the_whole_step_beyond_the_eps_ball():
  images, logits_fn, labels = linear_classification(8)
  start = projection.clip_to_box(images + EPS * jnp.sign(jax.random.normal(
      jax.random.PRNGKey(2), images.shape)))
  stepped = odgq.fresh_sign_step(logits_fn, images, start, labels, fraction=1.0,
                                 eps=EPS + 4 / 255, step_size=4 / 255)
  gradient = jax.grad(lambda x: jnp.sum(base.cross_entropy(logits_fn(x), labels)))(start)
  np.testing.assert_allclose(stepped, jnp.clip(start + 4 / 255 * jnp.sign(gradient), 0, 1),
                             atol=1e-7)
  assert float(jnp.abs(stepped - images).max()) > EPS + 3 / 255


@pytest.mark.parametrize("flag", ["local_carry_over", "global_per_class",
                                  "fresh_step_projection", "natural_branch_grad"])
def test_an_on_off_option_must_be_a_bool(flag):
  with pytest.raises(ValueError, match=f"odgq: {flag} must be True or False, got 'no'"):
    methods.create_method(methods.method_config("odgq", **{flag: "no"}))


@pytest.mark.parametrize("fraction", [0.1234, 1.5, -0.5, True])
def test_a_fresh_step_fraction_that_is_not_a_small_fraction_is_an_error(fraction):
  with pytest.raises(ValueError, match="fresh_step_fraction must be"):
    methods.create_method(methods.method_config("odgq", fresh_step_fraction=fraction))


def test_fresh_step_training_matches_on_one_and_four_devices():
  config = odgq_config(domains=("random",), global_step_sizes=(), replays=1, beta=0.0,
                       fresh_step_fraction=0.5)
  test_train.assert_four_devices_match_one_device(config)


def test_a_carried_local_domain_alone_with_beta_zero_trains_as_free_at():
  mesh = parallel.create_mesh(jax.devices()[:1])
  odgq_state, odgq_losses, _ = test_train.run_method_steps(mesh, 3, odgq_config(
      domains=("local",), global_step_sizes=(), local_carry_over=True, beta=0.0, replays=2))
  free_config = test_train.tiny_config()
  free_config.method = methods.method_config("free_at", replays=2)
  free_state, free_losses, _ = test_train.run_method_steps(mesh, 3, free_config)
  np.testing.assert_allclose(odgq_losses, free_losses, rtol=1e-5)
  np.testing.assert_allclose(odgq_state.method_state["local"], free_state.method_state["delta"],
                             atol=1e-6)
  # beta = 0 skips the natural forward, so the running BatchNorm statistics match too
  for a, b in zip(jax.tree.leaves((odgq_state.params, odgq_state.batch_stats)),
                  jax.tree.leaves((free_state.params, free_state.batch_stats))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_odgq_on_four_devices_matches_one_device():
  config = odgq_config(replays=2, selection="per_example")
  test_train.assert_four_devices_match_one_device(config)


@pytest.mark.parametrize("carry_over", [False, True])
def test_bank_round_trips_through_a_checkpoint_and_the_run_continues_identically(tmp_path,
                                                                                 carry_over):
  mesh = parallel.create_mesh(jax.devices()[:1])
  config = odgq_config(replays=2, local_carry_over=carry_over)
  method = methods.create_method(config.method)
  state, _, train_step = test_train.run_method_steps(mesh, 2, config)
  checkpointer = test_train.save_checkpoint(state, tmp_path)
  template, _ = test_train.make_state(config, mesh, method=method,
                                      num_train_examples=test_train.BATCH * 2)
  restored = checkpointer.restore(template)
  for name in state.method_state:
    np.testing.assert_array_equal(restored.method_state[name], state.method_state[name])
  batch = parallel.make_global_batch(test_train.synthetic_batches(3)[2], mesh)
  continued, _ = train_step(restored, batch)
  uninterrupted, _ = train_step(state, batch)
  for a, b in zip(jax.tree.leaves(continued), jax.tree.leaves(uninterrupted)):
    np.testing.assert_array_equal(a, b)


@test_input_pipeline.requires_offline_cifar10
def test_an_odgq_run_logs_its_domain_losses_and_loads_as_a_classifier(tmp_path, caplog):
  config = smoke.get_config()
  config.train_split, config.num_epochs, config.checkpoint_every_steps = "train[:128]", 1, 100
  config.method = methods.method_config("odgq", replays=2, selection="loss_weighted")
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(config, str(tmp_path))
  # Loss-weighted selection measured the first two domains in the two replays; the others are
  # not observed yet.
  assert "domain_loss_0_global" in caplog.text and "domain_loss_3_random nan" in caplog.text
  # The checkpoint holds the bank; load_classifier must restore it to reach the network.
  classifier = odgq_jax.load_classifier(str(tmp_path))
  assert classifier.step == 2
  assert classifier.logits(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 10)


@pytest.mark.parametrize("options,message", [
    ({"eps": 0.0}, r"eps must be in \(0, 1\]"), ({"replays": 0}, "replays must be an integer >= 1"),
    ({"local_step_size": 2.0}, r"step_size must be in \(0, 1\]"),
    ({"eps_warmup_updates": -1}, "eps_warmup_updates must be an integer >= 0"),
    ({"eps_warmup_updates": 7.5}, "eps_warmup_updates must be an integer >= 0")])
def test_out_of_range_numbers_are_errors(options, message):
  with pytest.raises(ValueError, match=message):
    methods.create_method(methods.method_config("odgq", **options))
