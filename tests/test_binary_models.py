"""Tests of the binary networks (odgq_jax/models/bireal.py): sizes, a binary unit computed by hand,
RSign and RPReLU, the real-valued shortcut, and how a config declares a binary model."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import default
from odgq_jax import classifier as classifier_lib
from odgq_jax import models
from odgq_jax import quant
from odgq_jax.models import bireal
from odgq_jax.models.layers import QuantConv
from tests import test_models

SIGN_WEIGHTS = quant.make_quantizer("binary", ste="clipped", scale=True)
APPROX_SIGN = quant.make_quantizer("binary", ste="approx_sign")
RSIGN = quant.make_quantizer("binary", ste="approx_sign", learnable_threshold=True)


def binary_model_config(name, learnable_threshold=False, rprelu=False):
  return default.binarize_model(default.get_config(), name, learnable_threshold, rprelu).model


def count_params(model, image_size=32):
  images = jax.ShapeDtypeStruct((2, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(test_models.rng(), x, train=False), images)
  return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


def conv3x3(c_in, c_out):
  return 9 * c_in * c_out


# Binary 3x3 convs per stage (the first of stages 2.. reads the previous stage's channels), the
# stem's kernel, the downsampling shortcuts' 1x1 kernels and the BN scales and biases.
BINARY_RESNET20_PARAMS = (
    6 * conv3x3(16, 16) + conv3x3(16, 32) + 5 * conv3x3(32, 32) + conv3x3(32, 64)
    + 5 * conv3x3(64, 64)
    + 27 * 16  # stem conv
    + 16 * 32 + 32 * 64  # shortcut convs
    + 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64 + 32 + 64)  # BN: stem, 18 units, 2 shortcuts
    + 64 * 10 + 10  # classifier
    + 1)  # the classifier input's LSQ step
BIREALNET18_PARAMS = (
    4 * conv3x3(64, 64) + conv3x3(64, 128) + 3 * conv3x3(128, 128) + conv3x3(128, 256)
    + 3 * conv3x3(256, 256) + conv3x3(256, 512) + 3 * conv3x3(512, 512)
    + 49 * 3 * 64
    + 64 * 128 + 128 * 256 + 256 * 512
    + 2 * (64 + 4 * 64 + 4 * 128 + 4 * 256 + 4 * 512 + 128 + 256 + 512)
    + 512 * 1000 + 1000
    + 1)


@pytest.mark.parametrize("name, num_classes, expected", [
    ("binary_resnet20", 10, BINARY_RESNET20_PARAMS), ("birealnet18", 1000, BIREALNET18_PARAMS)])
def test_parameter_counts(name, num_classes, expected):
  model = models.create_model_from_config(binary_model_config(name), num_classes)
  assert count_params(model) == expected
  # Bi-Real Net-18 has ResNet-18's 11,689,512 parameters (torchvision), and the step.
  assert name != "birealnet18" or expected == 11_689_512 + 1


def test_rsign_and_rprelu_add_their_per_channel_parameters():
  plain = models.create_model_from_config(binary_model_config("binary_resnet20"), 10)
  react = models.create_model_from_config(
      binary_model_config("binary_resnet20", learnable_threshold=True, rprelu=True), 10)
  # RSign: one threshold per input channel of each binary conv; RPReLU: three parameters per
  # output channel of each unit.
  thresholds = 6 * 16 + (16 + 5 * 32) + (32 + 5 * 64)
  rprelu = 3 * (6 * 16 + 6 * 32 + 6 * 64)
  assert count_params(react) == count_params(plain) + thresholds + rprelu


# One binary unit by hand: input x [1, 1, 3, 1] (one row, one channel), a 3x3 kernel of +-0.5
# (XNOR scale a = mean|W| = 0.5) whose middle row has signs (-1, +1, -1); the rows above and below
# meet only the zero padding.
X_ROW = np.array([0.5, -0.2, 0.3], np.float32)
KERNEL = 0.5 * np.array([[1, -1, 1], [-1, 1, -1], [1, 1, -1]], np.float32)
BN_SCALE, BN_BIAS = 2.0, 0.1
BN_EPSILON = 1e-5


def binary_unit(input_quantizer=APPROX_SIGN, rprelu=False, features=1, strides=1):
  conv = functools.partial(QuantConv, weight_quantizer=SIGN_WEIGHTS,
                           input_quantizer=input_quantizer)
  norm = functools.partial(nn.BatchNorm, use_running_average=True, epsilon=BN_EPSILON)
  shortcut_conv = functools.partial(QuantConv, weight_quantizer=models.common.UNQUANTIZED,
                                    input_quantizer=models.common.UNQUANTIZED)
  return bireal.BinaryConvUnit(features, strides, conv, norm, shortcut_conv, rprelu=rprelu)


def hand_variables(unit, x, **params):
  """The unit's variables with KERNEL, BN (scale 2, bias 0.1, statistics 0 and 1) and `params`
  ({path: value}) set."""
  variables = jax.tree.map(np.asarray, unit.init(test_models.rng(), x))
  variables["params"]["binary_conv"]["kernel"] = KERNEL.reshape(3, 3, 1, 1)
  variables["params"]["bn"] = {"scale": np.full(1, BN_SCALE), "bias": np.full(1, BN_BIAS)}
  variables["batch_stats"]["bn"] = {"mean": np.zeros(1), "var": np.ones(1)}
  for path, value in params.items():
    module, name = path.split("/")
    variables["params"][module][name] = np.asarray(value, np.float32)
  return variables


def bn(y):
  return BN_SCALE * np.asarray(y) / np.sqrt(1 + BN_EPSILON) + BN_BIAS


def test_binary_unit_by_hand():
  # sign(x) = (+1, -1, +1); with the middle row's signs (-1, +1, -1) and a = 0.5:
  #   y_0 = 0.5 (s_0 - s_1) = 1, y_1 = 0.5 (-s_0 + s_1 - s_2) = -1.5, y_2 = 0.5 (-s_1 + s_2) = 1;
  # u = bn(y) + x (the identity shortcut carries the real values).
  unit = binary_unit()
  x = X_ROW.reshape(1, 1, 3, 1)
  u = unit.apply(hand_variables(unit, x), x)
  np.testing.assert_allclose(u.ravel(), bn([1.0, -1.5, 1.0]) + X_ROW, rtol=1e-6)


def test_rsign_binarizes_around_its_learned_threshold():
  # sign(x - 0.4) = (+1, -1, -1): y = 0.5 (1 + 1, -1 - 1 + 1, 1 - 1) = (1, -0.5, 0).
  unit = binary_unit(input_quantizer=RSIGN)
  x = X_ROW.reshape(1, 1, 3, 1)
  variables = hand_variables(unit, x, **{"binary_conv/input_threshold": [0.4]})
  u = unit.apply(variables, x)
  np.testing.assert_allclose(u.ravel(), bn([1.0, -0.5, 0.0]) + X_ROW, rtol=1e-6)


def test_rprelu_shifts_and_leaks_below_its_threshold():
  # u = (2.6, -3.1, 2.4) (as in test_binary_unit_by_hand, to 1e-4); gamma 0.5, beta 0.25,
  # zeta -0.1: (2.1, 0.25 * -3.6, 1.9) - 0.1.
  unit = binary_unit(rprelu=True)
  x = X_ROW.reshape(1, 1, 3, 1)
  variables = hand_variables(unit, x, **{"rprelu/input_shift": [0.5],
                                         "rprelu/negative_slope": [0.25],
                                         "rprelu/output_shift": [-0.1]})
  u = unit.apply(variables, x)
  np.testing.assert_allclose(u.ravel(), [2.0, -1.0, 1.8], atol=1e-4)


def test_rprelu_starts_as_a_prelu_of_slope_one_quarter():
  u = jnp.array([[-2.0, 0.0, 3.0]]).reshape(1, 3, 1)
  params = bireal.RPReLU().init(test_models.rng(), u)
  np.testing.assert_allclose(bireal.RPReLU().apply(params, u).ravel(), [-0.5, 0.0, 3.0])


def test_downsampling_shortcut_is_real_valued_average_pool_and_1x1_conv():
  # With a zero kernel the binary conv outputs 0 (scale mean|W| = 0) and bn(0) = its bias, set to
  # 0: the unit's output is its shortcut, bn(conv1x1(avg_pool_2x2(x))) with BN the identity.
  unit = binary_unit(features=2, strides=2)
  x = jnp.array([0.5, -0.2, -1.0, 0.3]).reshape(1, 2, 2, 1)
  variables = jax.tree.map(np.asarray, unit.init(test_models.rng(), x))
  variables["params"]["binary_conv"]["kernel"] = np.zeros((3, 3, 1, 2), np.float32)
  variables["params"]["bn"]["bias"] = np.zeros(2, np.float32)
  variables["params"]["shortcut_conv"]["kernel"] = np.array([1.0, -2.0]).reshape(1, 1, 1, 2)
  u = unit.apply(variables, x)
  mean = float(np.mean(x))
  np.testing.assert_allclose(u.ravel(), [mean / np.sqrt(1 + BN_EPSILON),
                                         -2 * mean / np.sqrt(1 + BN_EPSILON)], rtol=1e-6)


@pytest.mark.parametrize("name", ["binary_resnet20", "birealnet18"])
def test_hidden_convs_are_binary_and_first_last_layers_8_bit(name):
  model = models.create_model_from_config(binary_model_config(name), 10)
  images = test_models.random_images((2, 32, 32, 3))
  variables = model.init(test_models.rng(), images, train=False)
  layers = test_models.record_quantized_layers(model, variables, images)

  binary_convs = [path for path in layers if path.endswith("binary_conv")]
  assert len(binary_convs) == (18 if name == "binary_resnet20" else 16)
  for path, (layer, params) in layers.items():
    if path.endswith("binary_conv"):
      assert (layer.weight_quantizer, layer.input_quantizer) == (SIGN_WEIGHTS, APPROX_SIGN), path
      kernel = np.asarray(layer.weight_quantizer(params["kernel"])).reshape(-1, layer.features)
      for column in kernel.T:  # {-a_c, +a_c} in every output channel
        values = np.unique(column)
        assert len(values) == 2 and values[0] == -values[1], path
    elif path.endswith("shortcut_conv"):
      assert layer.weight_quantizer == layer.input_quantizer == models.common.UNQUANTIZED, path
    else:
      assert path in ("stem_conv", "classifier"), path
      assert layer.weight_quantizer == quant.make_quantizer("uniform", bits=8), path


def test_gradients_reach_every_parameter_of_a_reactnet_style_model():
  model = models.create_model_from_config(
      binary_model_config("binary_resnet20", learnable_threshold=True, rprelu=True), 10)
  images = test_models.random_images((8, 8, 8, 3))
  labels = jnp.arange(8) % 10
  variables = model.init(test_models.rng(), images, train=False)

  def loss_fn(params):
    logits, _ = model.apply({**variables, "params": params}, images, train=True,
                            mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  grads = test_models.flat_params(jax.jit(jax.grad(loss_fn))(variables["params"]))
  assert "stage1_block1/unit1/binary_conv/input_threshold" in grads
  assert "stage3_block3/unit2/rprelu/negative_slope" in grads
  for path, grad in grads.items():
    assert np.all(np.isfinite(grad)) and np.any(grad != 0), path


def test_a_model_option_the_model_does_not_have_is_an_error():
  config = default.quantize_model(default.get_config(), 4, 4).model
  config.rprelu = True
  with pytest.raises(ValueError, match=r"model 'resnet20' has no option\(s\) \['rprelu'\]"):
    models.create_model_from_config(config, 10)


@pytest.mark.parametrize("config_name, binary", [
    ("cifar10_resnet20_binary", True), ("cifar10_resnet20_binary_odgq", True),
    ("imagenet_birealnet18_odgq", True), ("cifar10_resnet20_w4a4_odgq", False),
    ("cifar10_resnet20_fp", False), ("imagenet_resnet18_w4a4_odgq", False)])
def test_the_config_declares_whether_a_model_is_binary(config_name, binary):
  config = __import__(f"configs.{config_name}", fromlist=["get_config"]).get_config()
  assert models.is_binary(config.model) is binary
  clf = classifier_lib.Classifier(config=config, num_classes=10, image_shape=(32, 32, 3), step=0,
                                  model=None, variables=None)
  assert clf.is_binary is binary


def test_binary_weights_alone_make_a_binary_network():
  # Binary weights with 4-bit activations (a binary-weight network) also get PGD++; 1-bit
  # first/last layers do not count, those of the hidden layers do.
  config = default.quantize_model(default.get_config(), 4, 4).model
  config.weight_quantizer = {"name": "binary", "scale": True}
  assert models.is_binary(config)
  config = default.quantize_model(default.get_config(), 4, 4).model
  config.first_last_weight_quantizer = {"name": "binary"}
  assert not models.is_binary(ml_collections.ConfigDict(config))
