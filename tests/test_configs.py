"""Every run config under configs/ builds its model and training method."""
import importlib
import json
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


def test_equal_time_config_trains_odgq_for_fgsm_rs_wall_time_by_the_step_cost_record():
  from configs import cifar10_resnet20_w4a4_odgq_equal_time as equal_time
  cost = json.loads((CONFIG_DIR.parent / "results" / "benchmarks" / "step_cost.json").read_text())
  seconds = {name: cost["methods"][name]["seconds_per_update"] for name in ("fgsm_rs", "odgq")}
  assert equal_time.WALL_TIME_RATIO_FGSM_RS_TO_ODGQ == round(seconds["fgsm_rs"] / seconds["odgq"], 3)
  config, default_config = load("cifar10_resnet20_w4a4_odgq_equal_time"), load("cifar10_resnet20_w4a4_odgq")
  assert config.num_epochs == round(equal_time.FGSM_RS_EPOCHS * equal_time.WALL_TIME_RATIO_FGSM_RS_TO_ODGQ, 2)
  config.num_epochs = default_config.num_epochs
  assert config.to_dict() == default_config.to_dict()  # nothing else differs
