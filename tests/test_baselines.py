"""The adversarial-training baselines (PGD-AT, FGSM-RS, Free-AT, TRADES, DQ) on a tiny model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from odgq_jax import methods
from odgq_jax import parallel
from odgq_jax.methods import adversarial
from odgq_jax.methods import base
from odgq_jax.methods import dq
from tests import test_train

EPS = 8 / 255
BASELINES = ("pgd_at", "fgsm_rs", "free_at", "trades", "dq")


def run_method(name, num_batches, **options):
  """Trains the tiny model with method `name` on synthetic batches: (state, losses)."""
  mesh = parallel.create_mesh(jax.devices()[:1])
  config = test_train.tiny_config()
  config.method = methods.method_config(name, **options)
  state, losses, train_step = test_train.run_method_steps(mesh, num_batches, config)
  assert train_step._cache_size() == 1  # pylint: disable=protected-access
  return state, losses


def tiny_logits_fn():
  state, _ = test_train.make_state(test_train.tiny_config(),
                                   parallel.create_mesh(jax.devices()[:1]))
  return base.train_mode_logits_fn(state)


@pytest.mark.parametrize("num_steps,step_size", [(1, 10 / 255), (5, 2 / 255)])
def test_pgd_examples_stay_in_the_ball_and_the_box_and_raise_the_loss(num_steps, step_size):
  logits_fn = tiny_logits_fn()
  batch = test_train.synthetic_batches(1)[0]
  images = jnp.asarray(batch["image"]).at[:2].set(jnp.asarray([0.0, 1.0])[:, None, None, None])
  labels = jnp.asarray(batch["label"])
  crafted = adversarial.pgd_examples(logits_fn, images, labels, jax.random.PRNGKey(1), eps=EPS,
                                     step_size=step_size, num_steps=num_steps)
  assert crafted.shape == images.shape and crafted.dtype == images.dtype
  assert float(jnp.abs(crafted - images).max()) <= EPS + 1e-6
  assert 0.0 <= float(crafted.min()) and float(crafted.max()) <= 1.0
  clean_loss = base.cross_entropy(logits_fn(images), labels).mean()
  assert float(base.cross_entropy(logits_fn(crafted), labels).mean()) > float(clean_loss)


def test_sign_gradient_ascent_projects_a_start_outside_the_ball():
  images = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 3))
  start = images + jax.random.normal(jax.random.PRNGKey(1), images.shape)
  crafted = adversarial.sign_gradient_ascent(lambda x: jnp.sum(x ** 2), images, start, eps=EPS,
                                             step_size=2 / 255, num_steps=3)
  assert float(jnp.abs(crafted - images).max()) <= EPS + 1e-6
  assert 0.0 <= float(crafted.min()) and float(crafted.max()) <= 1.0


@pytest.mark.parametrize("name,options", [
    ("pgd_at", {"attack_steps": 3}),
    ("fgsm_rs", {}),
    ("free_at", {"replays": 2}),
    ("trades", {"attack_steps": 3}),
    ("dq", {}),
    ("dq", {"adversarial": True}),
])
def test_training_reduces_the_loss(name, options):
  _, losses = run_method(name, 20, **options)
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])


def test_free_at_perturbation_is_carried_over_and_stays_in_the_ball():
  state, _ = run_method("free_at", 3, replays=2)
  assert int(state.step) == 6  # two updates per minibatch
  delta = state.method_state["delta"]
  assert delta.shape == (test_train.BATCH, 8, 8, 3)
  assert 0.0 < float(jnp.abs(delta).max()) <= EPS + 1e-6
  last_images = test_train.synthetic_batches(3)[2]["image"]
  assert 0.0 <= float((last_images + delta).min()) and float((last_images + delta).max()) <= 1.0


def test_orthogonality_penalty_is_zero_for_orthogonal_kernels_and_positive_otherwise():
  key = jax.random.PRNGKey(0)
  conv = jnp.linalg.qr(jax.random.normal(key, (3 * 3 * 4, 8)))[0].reshape(3, 3, 4, 8)
  dense = jnp.linalg.qr(jax.random.normal(key, (16, 4)))[0]
  params = {"conv": {"kernel": conv, "input_step": jnp.ones(())},
            "dense": {"kernel": dense, "bias": jnp.ones((4,))}, "bn": {"scale": jnp.ones((8,))}}
  assert float(dq.orthogonality_penalty(params)) == pytest.approx(0.0, abs=1e-4)
  params["dense"]["kernel"] = 2.0 * dense  # W^T W = 4 I
  assert float(dq.orthogonality_penalty(params)) == pytest.approx(4 * 3.0 ** 2, rel=1e-4)


@pytest.mark.parametrize("name,options,message", [
    ("pgd_at", {"eps": 0.0}, "pgd_at: eps must be in"),
    ("pgd_at", {"attack_steps": 0}, "pgd_at: attack_steps must be an integer >= 1"),
    ("fgsm_rs", {"step_size": 2.0}, "fgsm_rs: step_size must be in"),
    ("free_at", {"replays": 0}, "free_at: replays must be an integer >= 1"),
    ("trades", {"beta": -1.0}, "trades: beta must be a number >= 0"),
    ("trades", {"attack_steps": 2.5}, "trades: attack_steps must be an integer >= 1"),
    ("dq", {"lipschitz_weight": -1e-4}, "dq: lipschitz_weight must be a number >= 0"),
    ("dq", {"adversarial": "yes"}, "dq: adversarial must be True or False"),
])
def test_bad_options_are_errors(name, options, message):
  with pytest.raises(ValueError, match=message):
    methods.create_method(methods.method_config(name, **options))


@pytest.mark.parametrize("name", BASELINES)
def test_method_config_round_trips_through_create_method(name):
  method = methods.create_method(methods.method_config(name), label_smoothing=0.1)
  assert method == methods.METHODS[name](label_smoothing=0.1)
  config = methods.method_config(name, eps=4 / 255)
  assert methods.create_method(config).eps == 4 / 255
  with pytest.raises(ValueError, match="has no option"):
    methods.method_config(name, bogus=1)
