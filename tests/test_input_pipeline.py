"""Tests of the input pipeline on mocked TFDS data and, when present, the offline CIFAR-10 copy."""
import itertools
import json
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from odgq_jax.data import crop_flip
from odgq_jax.data import input_pipeline
from tests import offline_data

NUM_MOCK_EXAMPLES = 50
BATCH_SIZE = 8  # two examples on each of the four fake devices
STEPS_PER_EPOCH = NUM_MOCK_EXAMPLES // BATCH_SIZE
# (train, eval) split names; the mock metadata gives each the NUM_MOCK_EXAMPLES the mock yields.
MOCK_SPLITS = {"cifar10": ("train", "test"), "imagenet2012": ("train", "validation")}

SHARED_DATA_DIR = offline_data.SHARED_DATA_DIR
requires_offline_cifar10 = offline_data.requires_offline_cifar10


def make_config(**overrides) -> ml_collections.ConfigDict:
  """A pipeline config for the mocked cifar10, with `overrides` applied."""
  config = ml_collections.ConfigDict(dict(
      dataset="cifar10", data_dir=None, train_split="train", eval_split="test",
      batch_size=BATCH_SIZE, eval_batch_size=12, augment="cifar", image_size=32,
      shuffle_buffer=NUM_MOCK_EXAMPLES, cache=True, seed=0))
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def mock_metadata_dir(tmp_path_factory) -> Path:
  """A data_dir with only the metadata (split sizes) of the mocked datasets."""
  data_dir = tmp_path_factory.mktemp("tfds_metadata")
  for name, split_names in MOCK_SPLITS.items():
    version = str(tfds.builder_cls(name).VERSION)
    splits = [{"name": split, "shardLengths": [str(NUM_MOCK_EXAMPLES)], "numBytes": "0"}
              for split in split_names]
    dataset_dir = data_dir / name / version
    dataset_dir.mkdir(parents=True)
    (dataset_dir / "dataset_info.json").write_text(
        json.dumps({"name": name, "version": version, "splits": splits}))
  return data_dir


@pytest.fixture
def mock_tfds(mock_metadata_dir):
  """Random TFDS data, NUM_MOCK_EXAMPLES per split, the same examples in every split."""
  with tfds.testing.mock_data(num_examples=NUM_MOCK_EXAMPLES, data_dir=str(mock_metadata_dir)):
    yield


def take(batches, n: int) -> list[dict[str, np.ndarray]]:
  """The next `n` batches."""
  return list(itertools.islice(batches, n))


def stored_images(config) -> np.ndarray:
  """All images of the (mocked) eval split, in stored order, as float in [0, 1]."""
  dataset = tfds.load(config.dataset, split=config.eval_split, data_dir=config.data_dir)
  return np.stack([example["image"] / 255.0 for example in tfds.as_numpy(dataset)])


@pytest.mark.usefixtures("mock_tfds")
@pytest.mark.parametrize("dataset,augment,num_classes", [
    ("cifar10", "cifar", 10), ("imagenet2012", "imagenet", 1000)])
def test_batches_have_expected_shapes_dtypes_and_ranges(dataset, augment, num_classes):
  config = make_config(dataset=dataset, augment=augment, eval_split=MOCK_SPLITS[dataset][1])
  train_batch = next(input_pipeline.train_batches(config))
  eval_batch = next(input_pipeline.eval_batches(config))

  for batch, batch_size in [(train_batch, BATCH_SIZE), (eval_batch, config.eval_batch_size)]:
    assert batch["image"].shape == (batch_size, 32, 32, 3)
    assert batch["image"].dtype == np.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["image"].std() > 0.05  # not blank
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (batch_size,)
    assert 0 <= batch["label"].min() and batch["label"].max() < num_classes
  geometry = {"crop_offset", "flip"} if augment == "cifar" else set()
  assert set(train_batch) == {"image", "label", "index"} | geometry
  assert train_batch["index"].dtype == np.int32
  assert 0 <= train_batch["index"].min() and train_batch["index"].max() < NUM_MOCK_EXAMPLES
  assert eval_batch["mask"].dtype == np.bool_


@pytest.mark.usefixtures("mock_tfds")
def test_resumed_train_batches_equal_the_tail_of_a_run_from_step_zero():
  config = make_config()
  num_batches = 2 * STEPS_PER_EPOCH + 3
  from_start = take(input_pipeline.train_batches(config), num_batches)
  # Resume mid-epoch 0 (crossing two epoch boundaries) and mid-epoch 2.
  for start_step in (4, 2 * STEPS_PER_EPOCH + 1):
    resumed = take(input_pipeline.train_batches(config, start_step=start_step),
                   num_batches - start_step)
    for expected, batch in zip(from_start[start_step:], resumed, strict=True):
      assert set(batch) == set(expected)
      for key in expected:
        np.testing.assert_array_equal(batch[key], expected[key])


@pytest.mark.usefixtures("mock_tfds")
def test_each_epoch_is_a_new_permutation_of_distinct_examples():
  config = make_config(augment="none")
  stored = stored_images(config).reshape(NUM_MOCK_EXAMPLES, -1)
  batches = take(input_pipeline.train_batches(config), 2 * STEPS_PER_EPOCH)
  images = np.concatenate([batch["image"] for batch in batches]).reshape(2, -1, stored.shape[1])

  def stored_index(image):
    (index,) = np.flatnonzero(np.all(np.isclose(stored, image), axis=1))
    return index

  epoch_orders = [[stored_index(image) for image in epoch] for epoch in images]
  for order in epoch_orders:
    assert len(set(order)) == STEPS_PER_EPOCH * BATCH_SIZE
  assert epoch_orders[0] != epoch_orders[1]
  assert epoch_orders[0] != list(range(STEPS_PER_EPOCH * BATCH_SIZE))
  # Each batch names its examples by their position in the split; no augmentation is the
  # identity crop.
  indices = np.concatenate([batch["index"] for batch in batches]).reshape(2, -1)
  np.testing.assert_array_equal(indices, epoch_orders)
  for batch in batches:
    np.testing.assert_array_equal(batch["crop_offset"], crop_flip.PAD_PIXELS)
    assert not batch["flip"].any()


@pytest.mark.usefixtures("mock_tfds")
def test_cifar_augmentation_is_a_padded_crop_and_flip_that_changes_each_epoch():
  config = make_config(shuffle_buffer=1)  # no shuffling: every epoch has the stored order
  stored = stored_images(config)
  batches = take(input_pipeline.train_batches(config), 2 * STEPS_PER_EPOCH)
  images = np.concatenate([batch["image"] for batch in batches]).reshape(2, -1, 32, 32, 3)

  padded = np.pad(stored, [(0, 0), (4, 4), (4, 4), (0, 0)])
  for epoch_images in images:
    for index, image in enumerate(epoch_images):
      crops = [padded[index, top:top + 32, left:left + 32]
               for top in range(9) for left in range(9)]
      assert any(np.allclose(image, crop) or np.allclose(image, crop[:, ::-1]) for crop in crops)
  num_changed = sum(not np.array_equal(a, b) for a, b in zip(images[0], images[1]))
  assert num_changed > 0.9 * len(images[0])
  # The geometry each batch reports is the one applied: mapping the stored images with it gives
  # the augmented images, and every offset and both flips occur.
  for batch in batches:
    mapped = crop_flip.to_augmented_frame(stored[batch["index"]], batch["crop_offset"],
                                          batch["flip"])
    np.testing.assert_allclose(mapped, batch["image"], atol=1e-6)
  offsets = np.concatenate([batch["crop_offset"] for batch in batches])
  assert offsets.min() == 0 and offsets.max() == 2 * crop_flip.PAD_PIXELS
  flips = np.concatenate([batch["flip"] for batch in batches])
  assert 0 < flips.mean() < 1


@pytest.mark.usefixtures("mock_tfds")
def test_eval_covers_every_example_once_in_order_with_padding_masked():
  config = make_config()
  batches = list(input_pipeline.eval_batches(config))

  assert len(batches) == -(-NUM_MOCK_EXAMPLES // config.eval_batch_size)
  assert all(batch["image"].shape[0] == config.eval_batch_size for batch in batches)
  mask = np.concatenate([batch["mask"] for batch in batches])
  images = np.concatenate([batch["image"] for batch in batches])
  labels = np.concatenate([batch["label"] for batch in batches])
  assert mask.sum() == NUM_MOCK_EXAMPLES and mask[:NUM_MOCK_EXAMPLES].all()
  np.testing.assert_allclose(images[mask], stored_images(config), atol=1e-6)
  stored_labels = [example["label"] for example in tfds.as_numpy(
      tfds.load(config.dataset, split=config.eval_split))]
  np.testing.assert_array_equal(labels[mask], stored_labels)
  assert not images[~mask].any() and not labels[~mask].any()


@pytest.mark.parametrize("field", ["batch_size", "eval_batch_size"])
def test_batch_size_not_divisible_by_the_devices_raises(field):
  config = make_config(**{field: 6})
  pipeline = input_pipeline.train_batches if field == "batch_size" else input_pipeline.eval_batches
  with pytest.raises(ValueError, match=f"{field}=6 .* = 4"):
    pipeline(config)


@pytest.mark.usefixtures("mock_tfds")
def test_dataset_info_respects_sliced_splits():
  config = make_config(train_split="train[:40]", eval_split="train[40:]")
  info = input_pipeline.get_dataset_info(config)
  assert info == input_pipeline.DatasetInfo(
      num_classes=10, image_shape=(32, 32, 3), num_train_examples=40, num_eval_examples=10)
  assert input_pipeline.steps_per_epoch(config) == 40 // BATCH_SIZE

  imagenet = make_config(dataset="imagenet2012", augment="imagenet", image_size=24,
                         eval_split="validation")
  assert input_pipeline.get_dataset_info(imagenet).image_shape == (24, 24, 3)
  assert input_pipeline.get_dataset_info(imagenet).num_classes == 1000


@pytest.mark.parametrize("dataset", ["cifar10_jpeg", "cifar10"])
def test_missing_dataset_error_names_dataset_and_data_dir(dataset, tmp_path):
  config = make_config(dataset=dataset, data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match=f"'{dataset}'.* {tmp_path}"):
    input_pipeline.get_dataset_info(config)


@requires_offline_cifar10
def test_offline_cifar10_batches():
  config = make_config(dataset="cifar10_jpeg", data_dir=str(SHARED_DATA_DIR), batch_size=128,
                       eval_batch_size=200, shuffle_buffer=256, cache=False)
  assert input_pipeline.get_dataset_info(config) == input_pipeline.DatasetInfo(
      num_classes=10, image_shape=(32, 32, 3), num_train_examples=50_000,
      num_eval_examples=10_000)
  held_out = make_config(dataset="cifar10_jpeg", data_dir=str(SHARED_DATA_DIR),
                         train_split="train[:45000]", eval_split="train[45000:]")
  held_out_info = input_pipeline.get_dataset_info(held_out)
  assert (held_out_info.num_train_examples, held_out_info.num_eval_examples) == (45_000, 5_000)

  eval_batch = next(input_pipeline.eval_batches(config))
  assert eval_batch["image"].shape == (200, 32, 32, 3) and eval_batch["mask"].all()
  train_batch = next(input_pipeline.train_batches(config))
  assert train_batch["image"].shape == (128, 32, 32, 3)
  for batch in (eval_batch, train_batch):
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert 0.3 < batch["image"].mean() < 0.7  # natural images, not padding
    assert set(np.unique(batch["label"])) <= set(range(10))
    assert len(np.unique(batch["label"])) >= 5


@requires_offline_cifar10
def test_two_processes_read_disjoint_slices_and_together_evaluate_everything(monkeypatch):
  # The mock ignores split slicing, so this needs real data: 51 images, global batches of 16.
  config = make_config(dataset="cifar10_jpeg", data_dir=str(SHARED_DATA_DIR),
                       train_split="train[:51]", eval_split="train[:51]", batch_size=16,
                       eval_batch_size=16, augment="none", shuffle_buffer=64, cache=False)
  stored = stored_images(config)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  evaluated = []
  for process_index in range(2):
    monkeypatch.setattr(jax, "process_index", lambda index=process_index: index)
    eval_batches = list(input_pipeline.eval_batches(config))
    # 26 and 25 examples: both processes run ceil(26 / 8) = 4 batches of 8.
    assert [batch["image"].shape[0] for batch in eval_batches] == [8] * 4
    evaluated += [batch["image"][batch["mask"]] for batch in eval_batches]

    # Train slices are equal (25 each, one example dropped): 51 // 16 = 3 steps of 8 per epoch.
    epoch = take(input_pipeline.train_batches(config), 3)
    own_slice = stored[25 * process_index:25 * (process_index + 1)].reshape(25, -1)
    for image in np.concatenate([batch["image"] for batch in epoch]):
      assert np.isclose(own_slice, image.reshape(-1)).all(axis=1).any()
    # The index of an example is its position in the whole split, not in the process's slice.
    for batch in epoch:
      np.testing.assert_allclose(batch["image"], stored[batch["index"]], atol=1e-6)
  np.testing.assert_allclose(np.concatenate(evaluated), stored, atol=1e-6)
