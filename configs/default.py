"""Default configuration: ResNet-20, full precision, natural training on CIFAR-10 (offline copy).

Every run config imports this file and overrides a few fields. Launch with

  python launch/train.py --config configs/default.py --workdir runs/default

Any field can be overridden on the command line, e.g. `--config.num_epochs=20`; an unknown key is an
error (the config is locked).
"""
import os

import ml_collections

from odgq_jax import methods
from odgq_jax import models

# The offline CIFAR-10 copy beside the checkout (../shared/tensorflow_datasets), if present;
# otherwise TFDS's default directory (~/tensorflow_datasets). Datasets are read, never downloaded:
# prepare one first (e.g. `tfds build cifar10`).
_SHARED_TFDS = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "tensorflow_datasets")
SHARED_DATA_DIR = os.path.normpath(_SHARED_TFDS) if os.path.isdir(_SHARED_TFDS) else None

FULL_PRECISION = {"name": "none"}


def quantizer(name: str, bits: int) -> dict:
  """A quantizer entry of the model config, e.g. quantizer("uniform", 4)."""
  return {"name": name, "bits": bits}


def binarize_model(config: ml_collections.ConfigDict, name: str, learnable_threshold: bool = False,
                   rprelu: bool = False, first_last_bits: int = 8) -> ml_collections.ConfigDict:
  """Sets the binary network `name` (a model of odgq_jax/models/bireal.py): hidden-layer weights
  a * sign(W) with the per-output-channel a = mean|W| (XNOR-Net; hardtanh STE), activations
  sign(x) with Bi-Real Net's ApproxSign gradient, with ReActNet's learnable per-channel threshold
  (RSign) if `learnable_threshold` and RPReLU after every binary unit if `rprelu`; the first conv's
  and the classifier's weights at `first_last_bits` ("uniform"), and the classifier's input at
  `first_last_bits` with a learned step, signed ("lsq", signed=True): the binary units' outputs are
  real-valued sums, not ReLU outputs. For LSQ's step-gradient scale a signed quantizer counts the
  elements of the whole batch (see odgq_jax/quant/lsq.py).
  """
  config.model.name = name
  config.model.weight_quantizer = {"name": "binary", "ste": "clipped", "scale": True}
  config.model.act_quantizer = {"name": "binary", "ste": "approx_sign",
                                "learnable_threshold": learnable_threshold}
  config.model.first_last_weight_quantizer = quantizer("uniform", first_last_bits)
  config.model.first_last_act_quantizer = {"name": "lsq", "bits": first_last_bits, "signed": True}
  config.model.rprelu = rprelu
  return config


def quantize_model(config: ml_collections.ConfigDict, weight_bits: int, act_bits: int,
                   first_last_bits: int = 8) -> ml_collections.ConfigDict:
  """Sets W{weight_bits}A{act_bits} quantization: weights signed per-channel abs-max ("uniform"),
  activations unsigned with learned step size ("lsq"), first and last layer at `first_last_bits`.
  """
  config.model.weight_quantizer = quantizer("uniform", weight_bits)
  config.model.act_quantizer = quantizer("lsq", act_bits)
  config.model.first_last_weight_quantizer = quantizer("uniform", first_last_bits)
  config.model.first_last_act_quantizer = quantizer("lsq", first_last_bits)
  return config


# Peak learning rate of recipe R1 (docs/experiments.md, "Training recipe"), the natural-training
# default until R2's 0.4 replaced it. Every robust run and transfer substitute in the README was
# tuned and measured with it, so their configs keep it.
R1_LEARNING_RATE = 0.2


def robust_training(config: ml_collections.ConfigDict, method: ml_collections.ConfigDict,
                    learning_rate: float = R1_LEARNING_RATE) -> ml_collections.ConfigDict:
  """Trains with the robust method `method` (`odgq_jax.methods.method_config(...)`) at peak
  `learning_rate` (R1's for CIFAR) and without label smoothing: smoothed targets raise PGD accuracy
  without making the network robust (Shafahi et al. 2019, "Label smoothing and logit squeezing: a
  replacement for adversarial training?"), which would blur the robustness comparison."""
  config.method = method
  config.learning_rate = learning_rate
  config.label_smoothing = 0.0
  return config


# ImageNet (ILSVRC-2012 in TFDS, `imagenet2012`): training examples and the threat model's radius.
IMAGENET_TRAIN_EXAMPLES = 1_281_167
IMAGENET_EPS = 4 / 255
# Global batch of the ImageNet configs: 128 per GPU on 8 GPUs, 256 per chip on a TPU v4-8.
IMAGENET_BATCH_SIZE = 1024
# Epochs of updates of the ImageNet configs: fast adversarial training's ImageNet budget (Wong,
# Rice & Kolter 2020: 15 epochs); 16 makes the updates at batch 1024 (1,251 per epoch) a multiple
# of ODG-Q's 4 replays.
IMAGENET_EPOCHS = 16
IMAGENET_VARIANTS = ("odgq", "natural")


def imagenet_learning_rate(batch_size: int) -> float:
  """Peak learning rate 0.1 per 256 images of the global batch (the linear scaling rule of Goyal
  et al. 2017, "Accurate, large minibatch SGD: training ImageNet in 1 hour")."""
  return 0.1 * batch_size / 256


def imagenet(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """ImageNet training at 224x224 in bfloat16 on 8 accelerators (natural training).

  TFDS `imagenet2012` from TFDS's default data_dir (prepare it first, or set data_dir), train on
  "train", evaluate on "validation"; random-resized crop and flip (`augment="imagenet"`), ImageNet
  normalisation; global batch IMAGENET_BATCH_SIZE, learning rate `imagenet_learning_rate` of it
  (override both together, e.g. --config.batch_size=512 --config.learning_rate=0.2), IMAGENET_EPOCHS
  epochs, 2 of warm-up, weight decay 1e-4 (He et al. 2016a).
  """
  config.dataset = "imagenet2012"
  config.data_dir = None
  config.train_split = "train"
  config.eval_split = "validation"
  config.augment = "imagenet"
  config.image_size = 224
  # Decoded images of ~0.4 MB on average: about 4 GB of host memory.
  config.shuffle_buffer = 10_000
  config.cache = False
  config.batch_size = IMAGENET_BATCH_SIZE
  config.eval_batch_size = 1000
  config.model.input_mean = models.IMAGENET_MEAN
  config.model.input_std = models.IMAGENET_STD
  config.compute_dtype = "bfloat16"
  config.num_epochs = float(IMAGENET_EPOCHS)
  config.warmup_epochs = 2
  config.learning_rate = imagenet_learning_rate(IMAGENET_BATCH_SIZE)
  config.weight_decay = 1e-4
  config.log_every_steps = 100
  config.checkpoint_every_steps = 1000
  return config


def imagenet_odgq_method() -> ml_collections.ConfigDict:
  """ODG-Q at eps 4/255 for the ImageNet configs: CIFAR-10's config (configs/
  cifar10_resnet20_w4a4_odgq_replays.py; the memory domain does not scale to ImageNet) with every step size halved with eps (global 0.5/255 and 2/255,
  local 4/255), loss-weighted selection at temperature 0.25 and eps growing over the first 2 epochs
  of updates at batch IMAGENET_BATCH_SIZE."""
  warmup_updates = 2 * (IMAGENET_TRAIN_EXAMPLES // IMAGENET_BATCH_SIZE)
  return methods.method_config(
      "odgq", eps=IMAGENET_EPS, global_step_sizes=(0.5 / 255, 2 / 255), local_step_size=4 / 255,
      selection="loss_weighted", selection_temperature=0.25, eps_warmup_updates=warmup_updates)


def imagenet_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """An ImageNet config (`imagenet(...)`) trained with ODG-Q (`variant="odgq"`, no label
  smoothing, the same learning rate) or naturally (`variant="natural"`, label smoothing 0.1): the
  text after ":" in `--config configs/imagenet_<...>.py:natural`.

  Raises:
    ValueError: a variant other than IMAGENET_VARIANTS.
  """
  if variant not in IMAGENET_VARIANTS:
    raise ValueError(f"config variant must be one of {IMAGENET_VARIANTS} (--config "
                     f"configs/<file>.py:<variant>), got {variant!r}")
  if variant == "natural":
    return config
  return robust_training(config, imagenet_odgq_method(), learning_rate=config.learning_rate)


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Data (odgq_jax/data/input_pipeline.py). For recipe selection, hold out training images:
  # --config.train_split='train[:45000]' --config.eval_split='train[45000:]' (with ODG-Q or
  # Free-AT, whose updates must be a multiple of their replays: train[:44800] and train[44800:]).
  config.dataset = "cifar10_jpeg"
  config.data_dir = SHARED_DATA_DIR
  config.train_split = "train"
  config.eval_split = "test"
  config.augment = "cifar"
  config.image_size = 32
  config.shuffle_buffer = 50_000
  config.cache = True
  config.batch_size = 128  # global, over all devices and hosts
  config.eval_batch_size = 500

  # Model (odgq_jax/models). Quantizers are dicts passed to odgq_jax.quant.make_quantizer.
  config.model = ml_collections.ConfigDict()
  config.model.name = "resnet20"
  config.model.weight_quantizer = dict(FULL_PRECISION)
  config.model.act_quantizer = dict(FULL_PRECISION)
  config.model.first_last_weight_quantizer = dict(FULL_PRECISION)
  config.model.first_last_act_quantizer = dict(FULL_PRECISION)
  config.model.input_mean = models.CIFAR10_MEAN
  config.model.input_std = models.CIFAR10_STD
  # Dtype of the activations and convolutions, "float32" or "bfloat16"; parameters, optimizer
  # state, BatchNorm statistics, quantizer parameters and perturbations stay float32
  # (odgq_jax/models/common.py).
  config.compute_dtype = "float32"

  # Training method (odgq_jax/methods): "natural" quantization-aware training by default; the
  # robust methods' configs replace this with their own fields.
  config.method = ml_collections.ConfigDict({"name": "natural"})

  # Optimisation (odgq_jax/train/optimizer.py).
  config.num_epochs = 10.0  # a float, so that a run may end inside an epoch
  # Natural training's peak learning rate and label smoothing were chosen on held-out training
  # images (train[:45000] for training, train[45000:] for the choice; ResNet-20 FP, 10 epochs):
  # 0.4 with smoothing 0.1 reached 85.12% and 84.28% held-out accuracy (seeds 0 and 1), 0.2 with
  # smoothing 84.04% (seed 0), 0.1 without smoothing 83.04% (docs/experiments.md, "Training
  # recipe"). The robust methods keep 0.2 and no smoothing: see robust_training.
  config.optimizer = "sgd"  # or "adam"
  config.learning_rate = 0.4  # peak, reached after the warm-up
  config.warmup_epochs = 0.5
  config.momentum = 0.9  # SGD's
  config.nesterov = True  # SGD's
  config.weight_decay = 5e-4  # on conv and dense kernels only
  config.label_smoothing = 0.1  # natural training only: see robust_training

  # Run control: these may change when a run is resumed.
  config.log_every_steps = 50
  config.eval_every_epochs = 1
  config.checkpoint_every_steps = 200
  config.keep_checkpoints = 2
  return config
