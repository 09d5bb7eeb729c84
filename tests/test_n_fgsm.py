"""N-FGSM: noise twice the radius, one FGSM step, no projection back to the eps-ball."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from odgq_jax import methods
from odgq_jax import parallel
from odgq_jax.methods import base
from tests import test_train

EPS = 8 / 255


def n_fgsm_config(**overrides):
  config = test_train.tiny_config()
  config.method = methods.method_config("n_fgsm", **overrides)
  return config


def test_n_fgsm_trains_and_compiles_once():
  mesh = parallel.create_mesh(jax.devices()[:1])
  _, losses, train_step = test_train.run_method_steps(mesh, 12, n_fgsm_config())
  assert np.mean(losses[-3:]) < np.mean(losses[:3])
  assert train_step._cache_size() == 1


def test_n_fgsm_perturbations_reach_past_the_eps_ball_but_not_past_noise_plus_step(monkeypatch):
  mesh = parallel.create_mesh(jax.devices()[:1])
  config = n_fgsm_config()
  state, _ = test_train.make_state(config, mesh)
  method = methods.create_method_for_run(config)
  trained_on = []
  original_update = base.gradient_update

  def recording_update(state, images, labels, label_smoothing, regularizer=None):
    trained_on.append(images)
    return original_update(state, images, labels, label_smoothing, regularizer)

  monkeypatch.setattr(base, "gradient_update", recording_update)
  batch = parallel.make_global_batch(test_train.synthetic_batches(1)[0], mesh)
  method.update(state, batch, jax.random.PRNGKey(0))
  delta = np.asarray(trained_on[0] - batch["image"])
  assert np.abs(delta).max() <= 3 * EPS + 1e-6  # noise 2 eps + step eps
  assert np.abs(delta).max() > EPS + 1e-3  # not projected back to the eps-ball
  assert trained_on[0].min() >= 0 and trained_on[0].max() <= 1


def test_n_fgsm_on_four_devices_matches_one_device():
  config = n_fgsm_config()
  test_train.assert_four_devices_match_one_device(config)


@pytest.mark.parametrize("options,message", [
    ({"eps": 0.0}, r"eps must be in \(0, 1\]"),
    ({"noise_magnitude": 1.5}, r"noise_magnitude must be in \[0, 1\]"),
    ({"step_size": -1.0}, r"step_size must be in \(0, 1\]")])
def test_out_of_range_n_fgsm_options_are_errors(options, message):
  with pytest.raises(ValueError, match=message):
    methods.create_method(methods.method_config("n_fgsm", **options))
