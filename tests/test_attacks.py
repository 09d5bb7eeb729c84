"""Tests of the attacks: closed forms on linear models, the threat model, strength orderings on a
small trained model, Square's freedom from gradients, the losses and the projections."""
import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from odgq_jax import attacks
from odgq_jax.attacks import projection
from odgq_jax.attacks.diversity import input_diversity
from odgq_jax.attacks.selection import keep_better, no_incumbent
from odgq_jax.attacks.square import _propose, square_side_lengths

EPS = attacks.DEFAULT_EPS
TOLERANCE = 1e-6


@functools.cache
def _jitted(attack):
  """`attack` under `jax.jit` with the model and the settings static: one compilation per model,
  settings and shapes, shared by the tests."""
  return jax.jit(attack, static_argnums=(0, 4))


def _run(attack, logits_fn, images, labels, key, settings):
  return _jitted(attack)(logits_fn, images, labels, key, settings)


def _accuracy(logits_fn, images, labels):
  return float(jnp.mean(jnp.argmax(logits_fn(images), axis=1) == labels))


def _linf_distance(adv, images):
  return float(jnp.max(jnp.abs(adv - images)))


# A small trained model: an MLP on synthetic 8x8x3 images of 4 classes, each a noisy prototype
# close to grey, so that eps = 8/255 attacks succeed on part of the test examples. Accuracies are
# compared on 500 test examples (1 point = 5 examples); the other checks use the first 100, where
# Square's thousand iterations run faster.

NUM_CLASSES = 4
IMAGE_SHAPE = (8, 8, 3)
PROTOTYPE_SPREAD = 0.08
PIXEL_NOISE = 0.1
HIDDEN = 32
SMALL_BATCH = 100


def _synthetic_split(prototypes, num_examples, seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, num_examples)
  noise = PIXEL_NOISE * rng.normal(size=(num_examples,) + IMAGE_SHAPE)
  images = np.clip(prototypes[labels] + noise, 0, 1)
  return jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.int32)


def _mlp_logits(params, images):
  hidden = jax.nn.relu(images.reshape(images.shape[0], -1) @ params["w1"] + params["b1"])
  return hidden @ params["w2"] + params["b2"]


@jax.jit
def _train_mlp(key, images, labels):
  """300 full-batch Adam steps of cross-entropy from a random init."""
  inputs = int(np.prod(IMAGE_SHAPE))
  key_1, key_2 = jax.random.split(key)
  params = {"w1": jax.random.normal(key_1, (inputs, HIDDEN)) / np.sqrt(inputs),
            "b1": jnp.zeros(HIDDEN),
            "w2": jax.random.normal(key_2, (HIDDEN, NUM_CLASSES)) / np.sqrt(HIDDEN),
            "b2": jnp.zeros(NUM_CLASSES)}
  optimizer = optax.adam(1e-2)
  loss_fn = lambda p: jnp.mean(attacks.cross_entropy(_mlp_logits(p, images), labels))

  def step(_, state):
    params, opt_state = state
    updates, opt_state = optimizer.update(jax.grad(loss_fn)(params), opt_state)
    return optax.apply_updates(params, updates), opt_state

  return jax.lax.fori_loop(0, 300, step, (params, optimizer.init(params)))[0]


@jax.custom_jvp
def _forbid_derivatives(logits):
  """The identity, raising AssertionError when differentiated."""
  return logits


@_forbid_derivatives.defjvp
def _forbid_derivatives_jvp(primals, tangents):
  raise AssertionError("the model was differentiated")


class TrainedModels(NamedTuple):
  """The attacked model, also wrapped to raise when differentiated, an independently trained
  substitute and 500 test examples."""
  logits_fn: Callable[[jax.Array], jax.Array]
  gradient_free_logits_fn: Callable[[jax.Array], jax.Array]
  substitute_logits_fn: Callable[[jax.Array], jax.Array]
  images: jax.Array
  labels: jax.Array


@pytest.fixture(scope="module")
def trained():
  rng = np.random.default_rng(0)
  prototypes = 0.5 + rng.uniform(-PROTOTYPE_SPREAD, PROTOTYPE_SPREAD,
                                 (NUM_CLASSES,) + IMAGE_SHAPE)
  train_images, train_labels = _synthetic_split(prototypes, 1024, seed=1)
  test_images, test_labels = _synthetic_split(prototypes, 500, seed=2)
  params = _train_mlp(jax.random.PRNGKey(0), train_images, train_labels)
  substitute_params = _train_mlp(jax.random.PRNGKey(1), train_images, train_labels)
  logits_fn = lambda x: _mlp_logits(params, x)
  return TrainedModels(logits_fn, lambda x: _forbid_derivatives(logits_fn(x)),
                       lambda x: _mlp_logits(substitute_params, x), test_images, test_labels)


# Losses.


def test_losses_on_hand_made_logits():
  logits = jnp.array([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 5.0, 1.0]])
  labels = jnp.array([0, 1])
  np.testing.assert_allclose(attacks.true_class_margin(logits, labels), [2.0, -3.0])
  np.testing.assert_allclose(attacks.carlini_wagner(logits, labels), [-2.0, 3.0])
  # Sorted logits: (3, 1, 0, -1) and (5, 2, 1, 0): z_pi1 - z_pi3 = 3 and 4.
  np.testing.assert_allclose(attacks.difference_of_logits_ratio(logits, labels),
                             [-2.0 / 3.0, 3.0 / 4.0], rtol=1e-6)
  np.testing.assert_allclose(attacks.cross_entropy(logits, labels),
                             -jax.nn.log_softmax(logits)[jnp.arange(2), labels], rtol=1e-6)


def test_dlr_is_invariant_to_shift_and_scale_and_needs_three_classes():
  logits = jax.random.normal(jax.random.PRNGKey(0), (5, 10))
  labels = jnp.arange(5)
  np.testing.assert_allclose(attacks.difference_of_logits_ratio(3.0 * logits + 7.0, labels),
                             attacks.difference_of_logits_ratio(logits, labels), rtol=1e-5)
  with pytest.raises(ValueError, match="at least 3 classes"):
    attacks.difference_of_logits_ratio(logits[:, :2], labels % 2)


# Projections.


@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4, 5, 2)])
def test_project_linf_is_a_projection_for_any_shape(shape):
  key_1, key_2 = jax.random.split(jax.random.PRNGKey(0))
  images = jax.random.uniform(key_1, shape)
  adv = images + jax.random.normal(key_2, shape)
  projected = attacks.project_linf(adv, images, EPS)
  assert projected.shape == shape and projected.dtype == adv.dtype
  assert _linf_distance(projected, images) <= EPS + TOLERANCE
  assert jnp.all((projected >= 0) & (projected <= 1))
  np.testing.assert_array_equal(attacks.project_linf(projected, images, EPS), projected)
  # Coordinates already feasible are left alone; the others go to the nearest bound.
  feasible = (jnp.abs(adv - images) <= EPS) & (adv >= 0) & (adv <= 1)
  np.testing.assert_array_equal(jnp.where(feasible, projected, adv), adv)


def test_project_linf_takes_an_array_eps():
  images = jnp.full((2, 3), 0.5)
  eps = jnp.array([[0.1], [0.2]])
  np.testing.assert_allclose(attacks.project_linf(jnp.ones((2, 3)), images, eps),
                             [[0.6] * 3, [0.7] * 3], rtol=1e-6)


def test_project_l2_rescales_per_example_and_keeps_feasible_points():
  images = jnp.full((3, 2, 2, 1), 0.5)
  delta = jnp.stack([jnp.full((2, 2, 1), 0.05), jnp.full((2, 2, 1), 0.2), jnp.zeros((2, 2, 1))])
  projected = attacks.project_l2(images + delta, images, 0.2)
  norms = projection.per_example_norm(projected - images, order=2)
  # L2 norms 0.1 (inside), 0.4 (rescaled by 1/2) and 0.
  np.testing.assert_allclose(norms, [0.1, 0.2, 0.0], atol=TOLERANCE)
  np.testing.assert_allclose(projected[1] - images[1], delta[1] / 2, atol=TOLERANCE)
  # Clipping to the box after the ball keeps the point in the ball.
  far = attacks.project_l2(images + 10.0, images, 1.0)
  assert jnp.all(far <= 1) and jnp.all(projection.per_example_norm(far - images, 2) <= 1.0)


def test_random_starts_lie_in_the_balls():
  key = jax.random.PRNGKey(0)
  images = jax.random.uniform(key, (16, 4, 4, 3))
  linf_start = attacks.random_linf_start(key, images, EPS)
  l2_start = attacks.random_l2_start(key, images, 0.5)
  assert _linf_distance(linf_start, images) <= EPS + TOLERANCE
  assert jnp.all(projection.per_example_norm(l2_start - images, 2) <= 0.5 + TOLERANCE)
  for start in (linf_start, l2_start):
    assert jnp.all((start >= 0) & (start <= 1)) and start.dtype == images.dtype
    assert _linf_distance(start, images) > 0


# Closed forms on a linear two-class model: the worst case of the margin z_y - z_other over the
# L-inf ball is x - eps * sign(w_y - w_other), and every gradient attack must find it.


def _linear_two_class_problem():
  """A linear model whose examples keep their labels in the ball, away from the box edges."""
  key_1, key_2 = jax.random.split(jax.random.PRNGKey(0))
  inputs = 4 * 4 * 3
  weights = 0.1 * jax.random.normal(key_1, (inputs, 2))
  direction = jnp.sign(weights[:, 0] - weights[:, 1]).reshape(4, 4, 3)
  labels = jnp.arange(6, dtype=jnp.int32) % 2
  towards_label = jnp.where(labels == 0, 1.0, -1.0)[:, None, None, None]
  noise = jax.random.uniform(key_2, (6, 4, 4, 3), minval=-0.05, maxval=0.05)
  images = 0.5 + 0.15 * towards_label * direction + noise
  # Zero margin at the grey image 0.5, so the margins are 0.15 ||w_0 - w_1||_1 + noise.
  bias = jnp.stack([-0.5 * jnp.sum(weights[:, 0] - weights[:, 1]), 0.0])
  logits_fn = lambda x: x.reshape(x.shape[0], -1) @ weights + bias
  optimum = images - EPS * towards_label * direction
  return logits_fn, images, labels, optimum


@pytest.mark.parametrize("name", ["fgsm", "pgd20", "cw_inf", "mim", "apgd_ce", "pgdpp"])
def test_gradient_attacks_find_the_linear_optimum(name):
  logits_fn, images, labels, optimum = _linear_two_class_problem()
  assert _accuracy(logits_fn, optimum, labels) == 1.0  # The optimum is not misclassified.
  attack, settings = attacks.ATTACKS[name]
  adv = _run(attack, logits_fn, images, labels, jax.random.PRNGKey(1), settings)
  np.testing.assert_allclose(adv, optimum, atol=TOLERANCE)


# The threat model: every attack stays in the ball and the box, keeps shape and dtype, and is
# deterministic given its key.


def _threat_model_cases(trained):
  """name -> (attack function, model, settings, norm)."""
  cases = {name: (attack, trained.logits_fn, settings, "linf")
           for name, (attack, settings) in attacks.ATTACKS.items()}
  # The protocol's resize factor 1.1 leaves an 8 x 8 image no room to move (a canvas of 8 x 8), so
  # input diversity is tested with room for random sizes and offsets.
  diverse = dataclasses.replace(attacks.ATTACKS["di_mi_fgsm"].settings, resize_factor=1.5)
  cases["di_mi_fgsm"] = (attacks.mim, trained.logits_fn, diverse, "linf")
  cases["square"] = (attacks.square, trained.gradient_free_logits_fn,
                     attacks.ATTACKS["square"].settings, "linf")
  cases["pgd_l2"] = (attacks.pgd, trained.logits_fn,
                     attacks.PGDSettings(eps=0.5, step_size=0.1, norm="l2"), "l2")
  for crafting in ("pgd20", "di_mi_fgsm"):
    transfer_settings = attacks.TransferSettings(crafting=cases[crafting][2])
    cases[f"transfer_{crafting}"] = (attacks.transfer_attack, trained.substitute_logits_fn,
                                     transfer_settings, "linf")
  noisy_logits_fn = lambda x, key: trained.logits_fn(
      jnp.clip(x + 0.05 * jax.random.normal(key, x.shape), 0, 1))
  eot_logits_fn = attacks.expectation_over_transformation(noisy_logits_fn, 4,
                                                          jax.random.PRNGKey(5))
  cases["eot_pgd20"] = (attacks.pgd, eot_logits_fn, attacks.ATTACKS["pgd20"].settings, "linf")
  return cases


THREAT_MODEL_CASES = [*attacks.ATTACKS, "pgd_l2", "transfer_pgd20", "transfer_di_mi_fgsm",
                      "eot_pgd20"]
# The attacks that draw nothing (no random start, no input diversity): the key is unused.
KEY_INDEPENDENT = ("fgsm", "mim")


@pytest.mark.parametrize("case", THREAT_MODEL_CASES)
def test_attack_stays_in_the_threat_model_and_is_deterministic_given_its_key(trained, case):
  attack, logits_fn, settings, norm = _threat_model_cases(trained)[case]
  images, labels = trained.images[:SMALL_BATCH], trained.labels[:SMALL_BATCH]
  key = jax.random.PRNGKey(7)
  adv = _run(attack, logits_fn, images, labels, key, settings)
  assert adv.shape == images.shape and adv.dtype == images.dtype
  assert jnp.all((adv >= 0) & (adv <= 1))
  if norm == "linf":
    assert _linf_distance(adv, images) <= settings.eps + TOLERANCE
  else:
    assert jnp.all(projection.per_example_norm(adv - images, 2) <= settings.eps + TOLERANCE)
  np.testing.assert_array_equal(_run(attack, logits_fn, images, labels, key, settings), adv)
  other = _run(attack, logits_fn, images, labels, jax.random.PRNGKey(8), settings)
  if case in KEY_INDEPENDENT:
    np.testing.assert_array_equal(other, adv)
  else:
    assert not np.array_equal(other, adv), "another key gave the same perturbation"


def test_registry_holds_the_protocol_attacks_at_eps_8_255():
  assert set(attacks.ATTACKS) == {"fgsm", "pgd20", "pgd100", "mim", "cw_inf", "apgd_ce",
                                  "apgd_dlr", "pgdpp", "square", "di_mi_fgsm"}
  for attack, settings in attacks.ATTACKS.values():
    assert callable(attack) and settings.eps == EPS
    hash(settings)  # Static jit arguments must be hashable.
    assert dataclasses.replace(settings, eps=4 / 255).eps == 4 / 255
  assert attacks.ATTACKS["pgd20"].settings.num_steps == 20
  assert attacks.ATTACKS["pgd100"].settings.num_steps == 100
  assert attacks.ATTACKS["cw_inf"].settings.loss == "cw"
  assert attacks.ATTACKS["apgd_dlr"].settings.loss == "dlr"
  assert attacks.ATTACKS["square"].settings.num_queries == 1000


def test_transfer_settings_keep_the_crafting_eps_in_sync():
  settings = dataclasses.replace(attacks.TransferSettings(), eps=4 / 255)
  assert settings.crafting.eps == 4 / 255
  with pytest.raises(ValueError, match="crafting"):
    attacks.TransferSettings(crafting=attacks.SquareSettings())


@pytest.mark.parametrize("make_settings, match", [
    (lambda: attacks.PGDSettings(norm="l1"), "norm"),
    (lambda: attacks.PGDSettings(loss="hinge"), "loss"),
    (lambda: attacks.PGDSettings(temperature="hot"), "temperature"),
    (lambda: attacks.PGDSettings(temperature=0.0), "temperature"),
    (lambda: attacks.APGDSettings(loss="hinge"), "loss"),
    (lambda: attacks.SquareSettings(num_queries=1), "num_queries"),
])
def test_bad_settings_raise(make_settings, match):
  with pytest.raises(ValueError, match=match):
    make_settings()


# Strength on the trained model: the protocol's sanity checks.


def _attacked_accuracy(trained, name, **changes):
  attack, settings = attacks.ATTACKS[name]
  settings = dataclasses.replace(settings, **changes)
  adv = _run(attack, trained.logits_fn, trained.images, trained.labels, jax.random.PRNGKey(7),
             settings)
  return _accuracy(trained.logits_fn, adv, trained.labels)


def test_sanity_checks_of_the_protocol_hold(trained):
  clean = _accuracy(trained.logits_fn, trained.images, trained.labels)
  fgsm, pgd20 = _attacked_accuracy(trained, "fgsm"), _attacked_accuracy(trained, "pgd20")
  assert clean >= 0.95 and fgsm < clean - 0.3  # A regime where the attacks partly succeed.
  assert pgd20 <= fgsm
  assert _attacked_accuracy(trained, "pgd100") <= pgd20 + 0.01
  assert _attacked_accuracy(trained, "apgd_ce") <= pgd20 + 0.01
  assert _attacked_accuracy(trained, "pgd20", eps=64 / 255) < 0.05


# Square needs no gradient.


def test_square_never_differentiates_and_still_lowers_accuracy(trained):
  with pytest.raises(AssertionError, match="differentiated"):
    jax.grad(lambda x: jnp.sum(trained.gradient_free_logits_fn(x)))(trained.images)
  attack, settings = attacks.ATTACKS["square"]
  images, labels = trained.images[:SMALL_BATCH], trained.labels[:SMALL_BATCH]
  adv = _run(attack, trained.gradient_free_logits_fn, images, labels, jax.random.PRNGKey(7),
             settings)
  clean = _accuracy(trained.logits_fn, images, labels)
  assert _accuracy(trained.logits_fn, adv, labels) < clean - 0.3


def test_square_schedule_halves_p_at_the_rescaled_points():
  sides = square_side_lengths(10000, 0.8, 32, 32)
  assert sides.shape == (9999,)
  assert sides[0] == round(np.sqrt(0.8 * 1024)) and sides[10] == sides[0]
  assert sides[11] == round(np.sqrt(0.4 * 1024))
  assert sides[-1] == 1  # round(sqrt(0.8 / 512 * 1024)) = 1.
  # For 1000 queries, iteration i plays 10000 i / 1000: p halves after iteration 1.
  short = square_side_lengths(1000, 0.8, 32, 32)
  assert short[1] == sides[0] and short[2] == sides[11]
  assert square_side_lengths(100, 1.0, 4, 4)[0] == 3  # At most H - 1.


def test_square_proposals_always_change_the_image():
  # Every pixel already at +eps: a window of one pixel can only change by a sign vector other
  # than (+, +, +), which the paper finds by redrawing and `_propose` by its direct draw.
  images = jnp.full((64, 3, 3, 3), 0.5)
  adv = images + EPS
  proposal = jax.jit(_propose, static_argnums=4)(
      jax.random.PRNGKey(0), images, adv, jnp.int32(1), EPS)
  changed = proposal != adv
  assert jnp.all(jnp.sum(jnp.any(changed, axis=3), axis=(1, 2)) == 1)  # One pixel per example.
  np.testing.assert_allclose(jnp.where(changed, proposal, 0.5 - EPS), 0.5 - EPS, atol=TOLERANCE)


# The choice among candidates, APGD's checkpoints, the input diversity transform and EOT.


def test_the_first_misclassified_candidate_is_kept_else_the_highest_loss():
  labels = jnp.array([0, 0, 0])
  correct, wrong = jnp.array([[1.0, 0.0]] * 3), jnp.array([[0.0, 1.0]] * 3)
  candidates = [(jnp.full((3, 1), value), loss, logits) for value, loss, logits in [
      (1.0, jnp.array([1.0, 1.0, 1.0]), correct),
      (2.0, jnp.array([2.0, 0.0, 0.5]), jnp.stack([correct[0], correct[1], wrong[2]])),
      (3.0, jnp.array([0.0, 3.0, 9.0]), jnp.stack([correct[0], wrong[1], wrong[2]]))]]
  incumbent = no_incumbent(jnp.zeros((3, 1)))
  for images, loss, logits in candidates:
    incumbent = keep_better(incumbent, images, loss, logits, labels)
  np.testing.assert_array_equal(incumbent.images[:, 0], [2.0, 3.0, 2.0])
  np.testing.assert_array_equal(incumbent.misclassified, [False, True, True])


def test_apgd_checkpoints_follow_the_paper():
  assert attacks.checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
  assert attacks.checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]


def test_input_diversity_keeps_shape_and_range():
  images = jax.random.uniform(jax.random.PRNGKey(0), (8, 32, 32, 3))
  key = jax.random.PRNGKey(1)
  diversify = jax.jit(input_diversity, static_argnums=(2, 3))
  diverse = diversify(key, images, 1.0, 1.1)
  assert diverse.shape == images.shape and jnp.all((diverse >= 0) & (diverse <= 1))
  assert jnp.all(jnp.max(jnp.abs(diverse - images), axis=(1, 2, 3)) > 0)
  np.testing.assert_array_equal(diversify(key, images, 0.0, 1.1), images)


def test_eot_averages_softmax_over_fresh_reproducible_draws():
  images = jax.random.uniform(jax.random.PRNGKey(0), (3, 2, 2, 1))
  logits = jnp.array([[1.0, 2.0, 0.0]] * 3)
  deterministic = jax.jit(attacks.expectation_over_transformation(lambda x, key: logits, 10,
                                                                  jax.random.PRNGKey(1)))
  np.testing.assert_allclose(deterministic(images), jax.nn.log_softmax(logits), atol=TOLERANCE)

  draws_only = jax.jit(attacks.expectation_over_transformation(
      lambda x, key: jax.random.normal(key, (x.shape[0], 3)), 10, jax.random.PRNGKey(1)))
  np.testing.assert_array_equal(draws_only(images), draws_only(images))
  assert not np.allclose(draws_only(images), draws_only(images + 1e-3))  # New input, new draws.

  weights = jax.random.normal(jax.random.PRNGKey(2), (4, 3))
  noisy_linear = attacks.expectation_over_transformation(
      lambda x, key: x.reshape(3, 4) @ weights + jax.random.normal(key, (3, 3)), 10,
      jax.random.PRNGKey(1))
  gradient = jax.jit(jax.grad(
      lambda x: jnp.sum(attacks.cross_entropy(noisy_linear(x), jnp.arange(3)))))(images)
  assert jnp.all(jnp.isfinite(gradient)) and jnp.all(jnp.any(gradient != 0, axis=(1, 2, 3)))
