"""Deterministic, resumable tf.data input pipelines over TFDS image datasets, as numpy batches.

Every process reads its own slice of a split (`tfds.split_for_jax_process`) and yields its share of
the global batch: `image` float32 [B, H, W, C] in [0, 1] and `label` int32 [B]; eval batches also
carry `mask` bool [B], False on padding. Train batches also carry `index` int32 [B], each example's
position in `config.train_split` (the same on any number of processes), and, under the "cifar" and
"none" augmentations, the geometry applied to each image: `crop_offset` int32 [B, 2] (top, left of
the crop in the image zero-padded by `crop_flip.PAD_PIXELS`; (4, 4) without augmentation) and `flip`
bool [B], so that per-example state kept in the stored image's frame can follow the image
(`crop_flip.py`; ODG-Q's memory domain).

Training data is a pure function of (`config.seed`, step). Epoch e is the split shuffled with a seed
derived from (seed, process, e); example i of that order is augmented with stateless random ops
keyed by (seed, process, e, i). A run resumed at step s therefore sees exactly the batches, and the
augmentations, that an uninterrupted run sees from its s-th batch on; the batches already seen in
the resumed epoch are skipped before augmentation, so resuming costs little.

Config fields read (an `ml_collections.ConfigDict`):
  dataset: TFDS name, e.g. "cifar10", "cifar10_jpeg", "cifar100", "svhn_cropped", "imagenet2012".
    Examples must have an "image" and an integer "label" feature.
  data_dir: TFDS data directory; None or '' for TFDS's default.
  train_split: TFDS split spec of the training data, e.g. "train" or "train[:45000]".
  eval_split: TFDS split spec evaluated by default, e.g. "test" or "train[45000:]".
  batch_size: global train batch, over all devices of all processes.
  eval_batch_size: global eval batch.
  augment: "cifar": zero-pad 4 pixels per side, random crop back to the stored size, random
      horizontal flip; eval images unchanged. Zero padding is the choice of the adversarial training
      literature (Madry et al. 2018, TRADES, Rice et al. 2020), which results are compared with.
    "imagenet": random-resized crop (area 8%-100%, aspect ratio 3/4-4/3) to `image_size` and random
      horizontal flip; eval resizes the shorter side to image_size / 0.875 and takes the centre
      `image_size` square.
    "none": the stored images, for training and eval.
  image_size: output height and width of the "imagenet" augmentation (unused otherwise).
  shuffle_buffer: tf.data shuffle buffer; the split size gives a uniform shuffle.
  cache: keep the decoded (uint8) training split in memory after the first epoch; right for CIFAR,
    not for ImageNet.
  seed: the seed of the shuffling and augmentation.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable, Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from odgq_jax.data import crop_flip

# JAX owns the accelerators: TensorFlow runs only the input pipeline, on the CPU.
tf.config.set_visible_devices([], "GPU")

AUGMENTATIONS = ("cifar", "imagenet", "none")

CIFAR_PAD_PIXELS = crop_flip.PAD_PIXELS
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
EVAL_CENTRE_CROP_FRACTION = 0.875

# Threads for all tf.data work: half the host's cores, so that the pipeline keeps ahead of the
# train step without taking the cores the step runs on (1 on a 2-core machine).
DATA_THREADS = max(1, (os.cpu_count() or 2) // 2)

Example = dict[str, tf.Tensor]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the training schedule need to know about the configured data."""
  num_classes: int
  image_shape: tuple[int, int, int]  # of the images in the batches, after augmentation
  num_train_examples: int  # in config.train_split, over all processes
  num_eval_examples: int  # in config.eval_split, over all processes


def get_dataset_info(config: ml_collections.ConfigDict) -> DatasetInfo:
  """Class count, batch image shape and split sizes, from the TFDS metadata (no data is read)."""
  builder = _dataset_builder(config)
  return DatasetInfo(
      num_classes=builder.info.features["label"].num_classes,
      image_shape=_batch_image_shape(config, builder),
      num_train_examples=builder.info.splits[config.train_split].num_examples,
      num_eval_examples=builder.info.splits[config.eval_split].num_examples)


def steps_per_epoch(config: ml_collections.ConfigDict) -> int:
  """Train steps per epoch: full global batches in the train split (the remainder is dropped)."""
  return get_dataset_info(config).num_train_examples // config.batch_size


def train_batches(config: ml_collections.ConfigDict, *,
                  start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """This process's shuffled, augmented train batches from step `start_step` on, without end.

  The batches depend only on (config, start_step + position): the iterator started at step s yields
  what the iterator started at 0 yields from its s-th batch on.
  """
  local_batch_size = _local_batch_size(config.batch_size, "batch_size")
  _check_augment(config)
  builder = _dataset_builder(config)
  # Equal slices (remainder dropped) give every process the same number of steps per epoch,
  # steps_per_epoch(config), since floor(floor(n / p) / (b / p)) == floor(n / b).
  process_split = tfds.split_for_jax_process(config.train_split, drop_remainder=True)
  num_local_examples = builder.info.splits[process_split].num_examples
  num_steps_per_epoch = num_local_examples // local_batch_size
  if num_steps_per_epoch == 0:
    raise ValueError(
        f"train_split {config.train_split!r} gives this process {num_local_examples} examples, "
        f"fewer than its batch of {local_batch_size} (batch_size={config.batch_size})")
  start_epoch, start_step_in_epoch = divmod(start_step, num_steps_per_epoch)

  examples = _with_split_positions(_read_images_and_labels(builder, process_split),
                                  _process_offset(config, builder))
  if config.cache:
    examples = examples.cache()
  augment = _train_augmentation(config)
  process_key = tf.constant([config.seed, jax.process_index()], tf.int64)

  def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
    epoch_key = tf.random.experimental.stateless_fold_in(process_key, epoch)
    shuffle_seed = tf.random.stateless_uniform(
        [], seed=epoch_key, minval=None, maxval=None, dtype=tf.int64)
    shuffled = examples.shuffle(
        config.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    num_skipped = tf.cast(epoch == start_epoch, tf.int64) * start_step_in_epoch * local_batch_size

    def augment_example(position: tf.Tensor, example: Example) -> Example:
      example_key = tf.random.experimental.stateless_fold_in(epoch_key, position)
      return {**augment(example["image"], example_key), "label": example["label"],
              "index": example["index"]}

    # The batch reads the epoch to its end, so the cache is complete after the first epoch.
    return (shuffled.enumerate()
            .skip(num_skipped)
            .map(augment_example, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(local_batch_size, drop_remainder=True)
            .map(_with_unit_float_images))

  batches = tf.data.Dataset.counter(start_epoch).flat_map(epoch_batches)
  return iter(tfds.as_numpy(_with_pipeline_options(batches.prefetch(tf.data.AUTOTUNE))))


def eval_batches(config: ml_collections.ConfigDict) -> Iterator[dict[str, np.ndarray]]:
  """Every example of this process's slice of `config.eval_split` once, in order.

  All batches have the local eval batch size; padding examples are zeros with `mask` False. Every
  process yields the same number of batches (some possibly all padding), as a multi-host eval
  step, run by all processes together, needs.
  """
  split = config.eval_split
  local_batch_size = _local_batch_size(config.eval_batch_size, "eval_batch_size")
  _check_augment(config)
  builder = _dataset_builder(config)
  process_split = tfds.split_for_jax_process(split)
  num_local_examples = builder.info.splits[process_split].num_examples
  # Slices differ by at most one example; the largest sets the batch count of every process.
  largest_slice = math.ceil(builder.info.splits[split].num_examples / jax.process_count())
  num_batches = math.ceil(largest_slice / local_batch_size)
  preprocess = _eval_preprocessing(config)

  def preprocess_example(example: Example) -> Example:
    return {"image": _to_unit_float(preprocess(example["image"])),
            "label": example["label"],
            "mask": tf.constant(True)}

  padding_example = {"image": tf.zeros(_batch_image_shape(config, builder), tf.float32),
                     "label": tf.constant(0, tf.int32),
                     "mask": tf.constant(False)}
  padding = tf.data.Dataset.from_tensors(padding_example).repeat(
      num_batches * local_batch_size - num_local_examples)
  batches = (_read_images_and_labels(builder, process_split)
             .map(preprocess_example, num_parallel_calls=tf.data.AUTOTUNE)
             .concatenate(padding)
             .batch(local_batch_size)
             .prefetch(tf.data.AUTOTUNE))
  return iter(tfds.as_numpy(_with_pipeline_options(batches)))


def first_examples(config: ml_collections.ConfigDict, split: str, num_examples: int | None = None,
                   data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The first `num_examples` examples of `split` (all of it if None), preprocessed as for
  evaluation: float32 images [N, H, W, C] in [0, 1] and int32 labels [N] (the examples an
  evaluation attacks). `data_dir` replaces the config's. A split that is already sliced, such as
  "train[45000:]", is read whole and cut.
  """
  config = config.copy_and_resolve_references()
  sliced = "[" in split
  config.eval_split = split if num_examples is None or sliced else f"{split}[:{num_examples}]"
  config.eval_batch_size = jax.device_count() * 100
  if data_dir is not None:
    config.data_dir = data_dir
  images, labels = [], []
  for batch in eval_batches(config):
    images.append(batch["image"][batch["mask"]])
    labels.append(batch["label"][batch["mask"]])
  images, labels = np.concatenate(images), np.concatenate(labels).astype(np.int32)
  return images[:num_examples], labels[:num_examples]


def _local_batch_size(global_batch_size: int, name: str) -> int:
  """This process's share of a global batch, which must split evenly over all devices."""
  num_devices = jax.process_count() * jax.local_device_count()
  if global_batch_size <= 0 or global_batch_size % num_devices:
    raise ValueError(
        f"{name}={global_batch_size} must be a positive multiple of the number of devices, "
        f"jax.process_count() * jax.local_device_count() = {num_devices}")
  return global_batch_size // jax.process_count()


def _check_augment(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError unless config.augment names a known augmentation."""
  if config.augment not in AUGMENTATIONS:
    raise ValueError(f"augment={config.augment!r}; expected one of {AUGMENTATIONS}")


def _dataset_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder of the prepared dataset; an error naming dataset and data_dir otherwise."""
  data_dir = config.data_dir or f"{tfds.core.constants.DATA_DIR} (the TFDS default)"
  missing = (f"TFDS dataset {config.dataset!r} is not prepared in data_dir {data_dir}; "
             "download and prepare it there, or set config.data_dir to where it is")
  try:
    builder = tfds.builder(config.dataset, data_dir=config.data_dir or None)
  except tfds.core.DatasetNotFoundError as e:
    raise FileNotFoundError(missing) from e
  if not builder.is_prepared():
    raise FileNotFoundError(missing)
  return builder


def _batch_image_shape(config: ml_collections.ConfigDict,
                       builder: tfds.core.DatasetBuilder) -> tuple[int, int, int]:
  """The shape of each image in the batches: stored, or image_size square under "imagenet"."""
  stored_shape = builder.info.features["image"].shape
  if config.augment == "imagenet":
    return (config.image_size, config.image_size, stored_shape[-1])
  if None in stored_shape:
    raise ValueError(
        f"{config.dataset} images vary in size {stored_shape}, so augment={config.augment!r}, "
        "which keeps the stored size, cannot batch them; use augment='imagenet'")
  return tuple(stored_shape)


def _read_images_and_labels(builder: tfds.core.DatasetBuilder, split) -> tf.data.Dataset:
  """The split's decoded uint8 images and int32 labels, in the stored order."""
  return builder.as_dataset(split=split, shuffle_files=False).map(
      lambda example: {"image": example["image"], "label": tf.cast(example["label"], tf.int32)},
      num_parallel_calls=tf.data.AUTOTUNE)


def _process_offset(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder) -> int:
  """Position in config.train_split of this process's first example: the sizes of the equal
  slices (`tfds.split_for_jax_process`, remainder dropped) of the processes before it."""
  slices = tfds.even_splits(config.train_split, n=jax.process_count(), drop_remainder=True)
  return sum(builder.info.splits[s].num_examples for s in slices[:jax.process_index()])


def _with_split_positions(examples: tf.data.Dataset, offset: int) -> tf.data.Dataset:
  """Adds `index`: each example's position in the split (offset + its position in the slice)."""
  return examples.enumerate(start=offset).map(
      lambda position, example: {**example, "index": tf.cast(position, tf.int32)})


def _with_pipeline_options(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Deterministic element order; tf.data confined to DATA_THREADS threads."""
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = DATA_THREADS
  options.threading.max_intra_op_parallelism = 1
  return dataset.with_options(options)


def _with_unit_float_images(batch: Example) -> Example:
  """The batch with its images as float32 in [0, 1]; one conversion per batch is cheapest."""
  return {**batch, "image": _to_unit_float(batch["image"])}


def _to_unit_float(image: tf.Tensor) -> tf.Tensor:
  """Pixel values 0..255 (uint8, or float after a resize) to float32 in [0, 1]."""
  return tf.cast(image, tf.float32) / 255.0


def _train_augmentation(
    config: ml_collections.ConfigDict) -> Callable[[tf.Tensor, tf.Tensor], Example]:
  """`(image, key) -> {"image", ...}`: the random train augmentation named by config.augment,
  with the crop geometry where the stored frame maps into the augmented one ("cifar", "none")."""
  if config.augment == "cifar":
    return _pad_crop_flip
  if config.augment == "imagenet":
    return lambda image, key: {"image": _random_resized_crop_flip(image, key, config.image_size)}
  identity_offset = tf.constant([CIFAR_PAD_PIXELS, CIFAR_PAD_PIXELS], tf.int32)
  return lambda image, key: {"image": image, "crop_offset": identity_offset,
                             "flip": tf.constant(False)}


def _eval_preprocessing(config: ml_collections.ConfigDict) -> Callable[[tf.Tensor], tf.Tensor]:
  """`image -> image`: the deterministic eval preprocessing of config.augment."""
  if config.augment == "imagenet":
    return lambda image: _resize_and_centre_crop(image, config.image_size)
  return lambda image: image


def _pad_crop_flip(image: tf.Tensor, key: tf.Tensor) -> Example:
  """The CIFAR augmentation, in uint8: zero-pad 4 pixels, random crop to the input size, flip.

  The offset and the flip are drawn exactly as `tf.image.stateless_random_crop` and
  `tf.image.stateless_random_flip_left_right` draw them from the same keys (the same images), and
  returned with the image as `crop_offset` (top, left) and `flip`.
  """
  crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
  padding = [[CIFAR_PAD_PIXELS, CIFAR_PAD_PIXELS], [CIFAR_PAD_PIXELS, CIFAR_PAD_PIXELS], [0, 0]]
  padded = tf.pad(image, padding)
  size = tf.shape(image)
  limit = tf.shape(padded) - size + 1
  offset = tf.random.stateless_uniform(
      [3], seed=crop_key, maxval=tf.int32.max, dtype=tf.int32) % limit
  cropped = tf.slice(padded, offset, size)
  flip = tf.random.stateless_uniform([], seed=flip_key, minval=0, maxval=1.0) < 0.5
  flipped = tf.cond(flip, lambda: tf.reverse(cropped, [1]), lambda: cropped)
  return {"image": flipped, "crop_offset": offset[:2], "flip": flip}


def _random_resized_crop_flip(image: tf.Tensor, key: tf.Tensor, size: int) -> tf.Tensor:
  """The Inception crop: a random box (8-100% of the area, aspect 3/4-4/3) resized, then a flip."""
  box_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
  begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image),
      bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=box_key,
      min_object_covered=0.0,
      aspect_ratio_range=CROP_ASPECT_RATIO_RANGE,
      area_range=CROP_AREA_RANGE,
      max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  box = tf.slice(image, begin, box_size)
  resized = tf.image.resize(box, [size, size], method="bilinear", antialias=True)
  return tf.image.stateless_random_flip_left_right(resized, seed=flip_key)


def _resize_and_centre_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """Resizes the shorter side to size / 0.875 and keeps the centre size x size square."""
  shorter_side = round(size / EVAL_CENTRE_CROP_FRACTION)
  height_width = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = shorter_side / tf.reduce_min(height_width)
  new_height_width = tf.cast(tf.round(height_width * scale), tf.int32)
  resized = tf.image.resize(image, new_height_width, method="bilinear", antialias=True)
  top, left = tf.unstack((new_height_width - size) // 2)
  return tf.image.crop_to_bounding_box(resized, top, left, size, size)
