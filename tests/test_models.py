"""Tests of the quantized layers and models."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from odgq_jax import models, quant
from odgq_jax.models import resnet_cifar
from odgq_jax.models.layers import QuantConv, QuantDense

NONE = quant.make_quantizer("none")
UNIFORM4 = quant.make_quantizer("uniform", bits=4)
UNIFORM8 = quant.make_quantizer("uniform", bits=8)
LSQ4 = quant.make_quantizer("lsq", bits=4)
LSQ8 = quant.make_quantizer("lsq", bits=8)
LSQ4_SIGNED = quant.make_quantizer("lsq", bits=4, signed=True)
LSQ8_SIGNED = quant.make_quantizer("lsq", bits=8, signed=True)
PACT4 = quant.make_quantizer("pact", bits=4)


def make_model(name, num_classes=10, weight=NONE, act=NONE, first_last_weight=NONE,
               first_last_act=NONE):
  return models.create_model(name, num_classes=num_classes, weight_quantizer=weight,
                             act_quantizer=act, first_last_weight_quantizer=first_last_weight,
                             first_last_act_quantizer=first_last_act)


def make_w4a4(name):
  """Uniform-4 weights, LSQ-4 activations; uniform-8 / LSQ-8 in the first and last layers."""
  return make_model(name, weight=UNIFORM4, act=LSQ4, first_last_weight=UNIFORM8,
                    first_last_act=LSQ8)


def rng(seed=0):
  """An RBG key: XLA on CPU compiles RBG samplers much faster than threefry ones."""
  return jax.random.key(seed, impl="rbg")


def random_images(shape, seed=0):
  return jax.random.uniform(rng(seed), shape)


def flat_params(tree):
  """{"a/b/c": leaf} for a nested dict of arrays."""
  return {"/".join(k.key for k in path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def quantizer_params(layer_params, prefix):
  """The params named `<prefix>_<name>` of one layer, as {name: value}."""
  return {name[len(prefix) + 1:]: value for name, value in layer_params.items()
          if name.startswith(prefix + "_")}


# Layers.


@pytest.mark.parametrize("act, param_name", [(LSQ4, "input_step"), (PACT4, "input_alpha")])
def test_quant_conv_convolves_quantized_input_with_quantized_kernel(act, param_name):
  x = random_images((2, 8, 8, 3))
  layer = QuantConv(4, weight_quantizer=LSQ4_SIGNED, input_quantizer=act, strides=(2, 2))
  params = layer.init(rng(1), x)["params"]

  assert set(params) == {"kernel", "weight_step", param_name}
  assert params["kernel"].shape == (3, 3, 3, 4)
  np.testing.assert_allclose(params[param_name], act.init_params(x)[param_name[len("input_"):]])
  np.testing.assert_allclose(params["weight_step"],
                             LSQ4_SIGNED.init_params(params["kernel"])["step"])
  quantized_x = act(x, quantizer_params(params, "input"))
  quantized_kernel = LSQ4_SIGNED(params["kernel"], quantizer_params(params, "weight"))
  expected = jax.lax.conv_general_dilated(quantized_x, quantized_kernel, (2, 2), ((1, 1), (1, 1)),
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = layer.apply({"params": params}, x)
  assert y.shape == (2, 4, 4, 4)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_quant_dense_multiplies_quantized_input_by_quantized_kernel():
  x = random_images((2, 6))
  layer = QuantDense(5, weight_quantizer=UNIFORM4, input_quantizer=LSQ4)
  params = layer.init(rng(1), x)["params"]

  assert set(params) == {"kernel", "bias", "input_step"}
  assert params["kernel"].shape == (6, 5)
  params = {**params, "bias": jnp.arange(5.0)}
  expected = (LSQ4(x, quantizer_params(params, "input")) @ UNIFORM4(params["kernel"]) +
              params["bias"])
  np.testing.assert_allclose(layer.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-6)


# Models: shapes and sizes.

# (name, num_classes, parameters of the reference implementation in millions)
REFERENCE_SIZES = [
    ("resnet20", 10, 0.27),  # He et al. 2016a, Table 6.
    ("resnet56", 10, 0.85),
    ("preact_resnet18", 10, 11.17),
    ("wrn34_10", 10, 46.16),  # Zagoruyko & Komodakis 2016; TRADES.
    ("vgg7", 10, 0.289),  # ours: 6 convs (32, 32, 64, 64, 128, 128 channels) + dense.
    ("resnet18", 1000, 11.69),  # torchvision.
    ("resnet50", 1000, 25.56),
    ("binary_resnet20", 10, 0.27),  # ResNet-20's convs, real 1x1 downsampling shortcuts.
    ("birealnet18", 1000, 11.69),  # Liu et al. 2018: ResNet-18's parameters.
]


@pytest.mark.parametrize("name, num_classes, millions", REFERENCE_SIZES)
def test_output_shape_and_parameter_count(name, num_classes, millions):
  model = make_model(name, num_classes=num_classes)
  images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(rng(), x, train=False), images)
  logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)

  assert logits.shape == (2, num_classes)
  assert set(variables) == {"params", "batch_stats"}
  count = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
  assert count == pytest.approx(millions * 1e6, rel=0.02)


def test_every_registered_model_is_tested():
  assert set(models.MODELS) == {name for name, _, _ in REFERENCE_SIZES} | {"tiny"}


@pytest.fixture(scope="module", params=["tiny", "resnet20"])
def w4a4_model(request):
  """(model, images, variables) of a W4A4 model (see `make_w4a4`), initialised on the images."""
  model = make_w4a4(request.param)
  images = random_images((4, 8, 8, 3))
  return model, images, model.init(rng(), images, train=False)


def test_logits_are_finite_in_train_and_eval_mode(w4a4_model):
  model, images, variables = w4a4_model
  logits = model.apply(variables, images, train=False)
  train_logits, _ = model.apply(variables, images, train=True, mutable=["batch_stats"])
  assert logits.shape == train_logits.shape == (4, 10)
  assert np.all(np.isfinite(logits)) and np.all(np.isfinite(train_logits))


def test_train_mode_updates_batch_stats_and_eval_mode_does_not():
  model = make_model("tiny")
  images = random_images((4, 8, 8, 3))
  variables = model.init(rng(), images, train=False)

  _, train_updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
  _, eval_updates = model.apply(variables, images, train=False, mutable=["batch_stats"])
  changed = jax.tree.map(lambda new, old: bool(jnp.any(new != old)),
                         train_updates["batch_stats"], variables["batch_stats"])
  assert all(jax.tree.leaves(changed))
  jax.tree.map(np.testing.assert_array_equal, eval_updates["batch_stats"],
               variables["batch_stats"])


def test_input_normalisation_uses_mean_and_std():
  """Images equal to the mean normalise to zero, so the first conv (no bias) outputs zero."""
  mean, std = (0.1, 0.2, 0.3), (0.5, 0.5, 0.5)
  model = models.create_model(
      "tiny", num_classes=10, weight_quantizer=NONE, act_quantizer=NONE,
      first_last_weight_quantizer=NONE, first_last_act_quantizer=NONE, input_mean=mean,
      input_std=std)
  images = jnp.broadcast_to(jnp.asarray(mean), (2, 8, 8, 3))
  variables = model.init(rng(), images, train=False)
  _, state = model.apply(variables, images, train=False, capture_intermediates=True,
                         mutable=["intermediates"])
  np.testing.assert_array_equal(state["intermediates"]["stem"]["conv"]["__call__"][0], 0.0)


# Models: quantization.


def record_quantized_layers(model, variables, images):
  """{path: (layer, its params)} of every QuantConv / QuantDense called in an eval forward pass."""
  layers = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, (QuantConv, QuantDense)) and context.method_name == "__call__":
      layers["/".join(context.module.path)] = (context.module, context.module.variables["params"])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    model.apply(variables, images, train=False)
  return layers


def test_w4a4_layers_use_their_quantizers(w4a4_model):
  model, images, variables = w4a4_model
  layers = record_quantized_layers(model, variables, images)

  kernels = {path[:-len("/kernel")] for path in flat_params(variables["params"])
             if path.endswith("/kernel")}
  assert set(layers) == kernels
  for path, (layer, params) in layers.items():
    if path == "stem/conv":
      expected = (UNIFORM8, NONE)
    elif path == "classifier":
      expected = (UNIFORM8, LSQ8)
    else:
      expected = (UNIFORM4, LSQ4)
    assert (layer.weight_quantizer, layer.input_quantizer) == expected, path

    expected_names = {"kernel", "bias"} if path == "classifier" else {"kernel"}
    if layer.input_quantizer != NONE:
      expected_names.add("input_step")
    assert set(params) == expected_names, path

    quantized = layer.weight_quantizer(params["kernel"], quantizer_params(params, "weight"))
    per_channel = np.asarray(quantized).reshape(-1, quantized.shape[-1])
    max_values = 2 * layer.weight_quantizer.max_level + 1
    assert max(len(np.unique(column)) for column in per_channel.T) <= max_values, path


def test_gradients_reach_every_parameter():
  model = make_model("tiny", weight=LSQ4_SIGNED, act=LSQ4, first_last_weight=LSQ8_SIGNED,
                     first_last_act=LSQ8)
  images = random_images((8, 8, 8, 3))
  labels = jnp.arange(8) % 10
  variables = model.init(rng(), images, train=False)

  def loss_fn(params):
    logits, _ = model.apply({**variables, "params": params}, images, train=True,
                            mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  grads = flat_params(jax.jit(jax.grad(loss_fn))(variables["params"]))
  assert {"stem/conv/weight_step", "conv_bn/conv/weight_step", "conv_bn/conv/input_step",
          "classifier/weight_step", "classifier/input_step"} <= set(grads)
  assert "stem/conv/input_step" not in grads
  for path, grad in grads.items():
    assert np.all(np.isfinite(grad)) and np.any(grad != 0), path


# Registry.


def test_create_model_rejects_unknown_name():
  with pytest.raises(ValueError, match="registered models: .*resnet20"):
    make_model("resnet21")


def test_create_model_from_config():
  config = ml_collections.ConfigDict({
      "name": "resnet20",
      "weight_quantizer": {"name": "uniform", "bits": 4},
      "act_quantizer": {"name": "lsq", "bits": 4},
      "first_last_weight_quantizer": {"name": "uniform", "bits": 8},
      "first_last_act_quantizer": {"name": "none"},
      "input_mean": (0.5, 0.5, 0.5),
      "input_std": (0.25, 0.25, 0.25),
  })
  model = models.create_model_from_config(config, num_classes=100)

  assert isinstance(model, resnet_cifar.CifarResNet) and model.blocks_per_stage == 3
  assert model.num_classes == 100
  assert (model.weight_quantizer, model.act_quantizer) == (UNIFORM4, LSQ4)
  assert (model.first_last_weight_quantizer, model.first_last_act_quantizer) == (UNIFORM8, NONE)
  assert (model.input_mean, model.input_std) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

