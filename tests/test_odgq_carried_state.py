"""ODG-Q's local perturbation carried from minibatch to minibatch (`local_carry_over`) gives the
same run on 4 devices as on one (Free-AT's carried perturbation: tests/test_sharded_state.py)."""
import jax
import numpy as np

from odgq_jax import methods
from odgq_jax import parallel
from tests import test_train


def test_carried_local_perturbation_on_four_devices_matches_one_device():
  config = test_train.tiny_config()
  config.method = methods.method_config("odgq", replays=2, local_carry_over=True,
                                        selection="per_example")
  one_device, four_devices = (parallel.create_mesh(jax.devices()[:n]) for n in (1, 4))
  state1, losses1, _ = test_train.run_method_steps(one_device, 3, config)
  state4, losses4, _ = test_train.run_method_steps(four_devices, 3, config)
  local = np.asarray(state4.method_state["local"])
  assert local.shape == (test_train.BATCH, 8, 8, 3) and np.abs(local).max() > 0
  np.testing.assert_allclose(losses1, losses4, rtol=1e-4)
  assert state1.method_state.keys() == state4.method_state.keys()
  for a, b in zip(jax.tree.leaves((state1.params, state1.method_state)),
                  jax.tree.leaves((state4.params, state4.method_state))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
