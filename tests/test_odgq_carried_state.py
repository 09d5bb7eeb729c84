"""ODG-Q's local perturbation carried from minibatch to minibatch (`local_carry_over`) gives the
same run on 4 devices as on one (Free-AT's carried perturbation: tests/test_sharded_state.py)."""
import numpy as np

from odgq_jax import methods
from tests import test_train


def test_carried_local_perturbation_on_four_devices_matches_one_device():
  config = test_train.tiny_config()
  config.method = methods.method_config("odgq", replays=2, local_carry_over=True,
                                        selection="per_example")
  _, state4 = test_train.assert_four_devices_match_one_device(config)
  local = np.asarray(state4.method_state["local"])
  assert local.shape == (test_train.BATCH, 8, 8, 3) and np.abs(local).max() > 0
