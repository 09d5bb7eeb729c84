"""The transfer attacks' substitutes committed as exports (results/substitute_<name>/export): each
is the model its config trains, at its run record's last step, and classifies test images as
accurately as that record says, so `--substitute NAME=results/substitute_NAME/export` stands for a
retrained substitute."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

import odgq_jax
from odgq_jax.data import input_pipeline
from odgq_jax.evaluation import protocol as protocol_lib
from tests import offline_data
from tests.test_results import results  # benchmarks/results.py, loaded once for both modules

REPO = Path(__file__).resolve().parents[1]
NAMES = sorted({substitute for substitute, _ in protocol_lib.TRANSFER_SUBSTITUTES.values()})
NUM_IMAGES = 500
# Four binomial standard errors of an accuracy near 0.8 on NUM_IMAGES images.
ACCURACY_TOLERANCE = 4 * math.sqrt(0.8 * 0.2 / NUM_IMAGES)


def substitute_run(name: str):
  """results/substitute_<name>/ as benchmarks/results.py reads it: record, commands, config."""
  return results.load_run(REPO / "results" / f"substitute_{name}")


def load_export(name: str) -> odgq_jax.Classifier:
  return odgq_jax.load_classifier(str(REPO / "results" / f"substitute_{name}" / "export"))


def model_json(config) -> dict:
  """The model config as JSON reads it back, so that a tuple equals a list of the same values."""
  return json.loads(config.model.to_json())


@pytest.mark.parametrize("name", NAMES)
def test_export_is_the_trained_substitute(name):
  run = substitute_run(name)
  substitute = load_export(name)
  config = results.config_from_train_command(run.commands["train"])
  assert model_json(substitute.config) == model_json(config)
  assert substitute.config.seed == config.seed
  assert substitute.step == run.record["updates"]
  assert f"--output results/substitute_{name}/export" in run.commands["export"]


@offline_data.requires_offline_cifar10
@pytest.mark.parametrize("name", NAMES)
def test_export_reproduces_recorded_accuracy(name):
  recorded = substitute_run(name).record["evals"][-1]["accuracy"]
  substitute = load_export(name)
  images, labels = input_pipeline.first_examples(
      substitute.config, "test", NUM_IMAGES, str(offline_data.SHARED_DATA_DIR))
  accuracy = float(np.mean(np.argmax(substitute.logits(images), axis=-1) == labels))
  assert abs(accuracy - recorded) < ACCURACY_TOLERANCE, (name, accuracy, recorded)
