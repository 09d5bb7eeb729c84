"""Test set-up: four fake CPU devices, so that data-parallel code is tested as on a 4-chip host.

The flag must be set before JAX initialises its backend, hence here, before any test imports jax.
Single-device behaviour is tested on a one-device mesh built from `jax.devices()[:1]`.
The marker `requires_offline_cifar10` skips a test without the offline CIFAR-10 copy, or fails it
in CI (tests/offline_data.py).
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

# Tests run tiny models for a few steps, so compilation dominates: skip XLA's expensive passes.
jax.config.update("jax_disable_most_optimizations", True)

from tests import offline_data  # pylint: disable=g-import-not-at-top,wrong-import-position


def pytest_configure(config):
  config.addinivalue_line(
      "markers", f"{offline_data.MARKER}: needs the offline CIFAR-10 copy (tests/offline_data.py)")


def pytest_runtest_setup(item):
  if item.get_closest_marker(offline_data.MARKER):
    offline_data.check_available()
