"""Every run config under configs/ builds its model and training method."""
import importlib
import pathlib

import pytest

from configs import default
from odgq_jax import methods
from odgq_jax import models

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"
RUN_CONFIGS = sorted(path.stem for path in CONFIG_DIR.glob("*.py") if path.stem != "__init__")


def load(name):
  return importlib.import_module(f"configs.{name}").get_config()


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_config_builds_its_model_and_method(name):
  config = load(name)
  methods.create_method_for_run(config)
  models.create_model_from_config(config.model, num_classes=10)


@pytest.mark.parametrize("name", [n for n in RUN_CONFIGS if n.startswith("cifar10_resnet20_w4a4_")])
def test_robust_configs_name_their_method_and_keep_recipe_r1_without_label_smoothing(name):
  config = load(name)
  # cifar10_resnet20_w4a4_<method>.py, or <method>_<variant>.py for a variant of the method.
  suffix = name.removeprefix("cifar10_resnet20_w4a4_")
  assert suffix == config.method.name or suffix.startswith(f"{config.method.name}_")
  assert config.learning_rate == default.R1_LEARNING_RATE
  assert config.label_smoothing == 0.0
