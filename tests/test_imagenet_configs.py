"""The ImageNet configs: their recipe, and each trained end to end by `train_and_evaluate` on mocked
TFDS imagenet2012 at 32x32 (a few updates; compilation dominates)."""
import importlib
import json

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import default
from odgq_jax import checkpointing
from odgq_jax import models
from odgq_jax import train
from tests.test_input_pipeline import NUM_MOCK_EXAMPLES
from tests.test_input_pipeline import mock_metadata_dir  # pylint: disable=unused-import (fixture)

IMAGENET_CONFIGS = ("imagenet_resnet18_w4a4_odgq", "imagenet_birealnet18_odgq",
                    "imagenet_resnet50_w4a4_odgq")


def load(name, variant="odgq"):
  return importlib.import_module(f"configs.{name}").get_config(variant)


@pytest.mark.parametrize("name", IMAGENET_CONFIGS)
def test_imagenet_config_is_the_8_accelerator_bfloat16_recipe(name):
  config = load(name)
  assert (config.dataset, config.train_split, config.eval_split) == (
      "imagenet2012", "train", "validation")
  assert (config.augment, config.image_size, config.cache) == ("imagenet", 224, False)
  assert (config.model.input_mean, config.model.input_std) == (
      models.IMAGENET_MEAN, models.IMAGENET_STD)
  assert config.compute_dtype == "bfloat16"
  assert config.batch_size == 1024 and config.batch_size % 8 == 0
  assert config.learning_rate == pytest.approx(0.1 * config.batch_size / 256)
  assert config.method.name == "odgq" and config.label_smoothing == 0.0
  assert config.method.eps == pytest.approx(4 / 255)
  assert "memory" not in config.method.domains
  steps_per_epoch = default.IMAGENET_TRAIN_EXAMPLES // config.batch_size
  assert config.num_epochs * steps_per_epoch % config.method.replays == 0
  assert models.is_binary(config.model) is (name == "imagenet_birealnet18_odgq")


@pytest.mark.parametrize("name", IMAGENET_CONFIGS)
def test_natural_counterpart_is_the_natural_variant(name):
  odgq, natural = load(name), load(name, "natural")
  assert natural.method.name == "natural" and natural.label_smoothing == 0.1
  assert natural.learning_rate == odgq.learning_rate
  assert natural.model == odgq.model
  assert {k for k in natural if natural[k] != odgq[k]} == {"method", "label_smoothing"}


def test_unknown_variant_is_an_error():
  with pytest.raises(ValueError, match=r"variant must be one of \('odgq', 'natural'\)"):
    load("imagenet_resnet18_w4a4_odgq", "pgd")


def mock_run_config(name, data_dir):
  """The config's ODG-Q variant at 32x32 on the mocked 50-image splits: batch 8 (two images per
  fake device), 6 steps per epoch, one epoch, and 1 replay per minibatch instead of 4 (the replays
  are tested in test_odgq.py; the four-fold unrolled step of an ImageNet network takes minutes to
  compile here)."""
  config = load(name)
  config.data_dir = data_dir
  config.image_size = 32
  config.shuffle_buffer = NUM_MOCK_EXAMPLES
  config.batch_size = config.eval_batch_size = 8
  config.num_epochs, config.warmup_epochs = 1, 0.5
  config.method.replays = 1
  config.log_every_steps = config.checkpoint_every_steps = 2
  return config


@pytest.mark.parametrize("name", IMAGENET_CONFIGS)
def test_imagenet_config_trains_end_to_end_on_mock_data(name, mock_metadata_dir, tmp_path):
  config = mock_run_config(name, str(mock_metadata_dir))
  with tfds.testing.mock_data(num_examples=NUM_MOCK_EXAMPLES, data_dir=str(mock_metadata_dir)):
    state = train.train_and_evaluate(config, str(tmp_path))

  assert int(state.step) == NUM_MOCK_EXAMPLES // 8
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state.params))
  assert checkpointing.Checkpointer(str(tmp_path), read_only=True).latest_step() == int(state.step)
  saved = json.loads((tmp_path / checkpointing.DATASET_INFO_FILE).read_text())
  assert saved["num_classes"] == 1000 and tuple(saved["image_shape"]) == (32, 32, 3)
