"""bfloat16 compute (`config.compute_dtype`): activations and convolutions in bfloat16, everything
that is learned, accumulated or carried in float32; quantizer levels exact; gradients and a short
training run within a stated tolerance of float32."""
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from odgq_jax import methods
from odgq_jax import models
from odgq_jax import parallel
from odgq_jax import quant
from odgq_jax.models import layers
from odgq_jax.models.layers import QuantConv
from tests import test_models
from tests import test_train

UNIFORM4 = quant.make_quantizer("uniform", bits=4)
LSQ4 = quant.make_quantizer("lsq", bits=4)
# bfloat16 keeps 8 significant bits: one rounding is within 2^-9 relative. The gradients of a
# layer, each a sum of bfloat16 products, stay within GRADIENT_RTOL of float32's, in norm.
GRADIENT_RTOL = 1e-2
# A 12-step W4A4 ResNet-20 run (peak learning rate 0.01, synthetic batches of 16): each step's
# bfloat16 loss stays within LOSS_ATOL of float32's, and the mean over each 4 steps within
# MEAN_LOSS_ATOL (the losses fall from about 2 to below 0.1; levels that flip between the dtypes
# make the curves drift apart by about half these bounds).
LOSS_STEPS = 12
LOSS_ATOL = 0.2
MEAN_LOSS_ATOL = 0.1


def bfloat16_exact_images(shape, seed=0):
  """float32 images that bfloat16 represents exactly, so both dtypes see the same input."""
  return test_models.random_images(shape, seed).astype(jnp.bfloat16).astype(jnp.float32)


def w4a4_config(compute_dtype, name="resnet20"):
  config = default.quantize_model(default.get_config(), weight_bits=4, act_bits=4)
  config.model.name = name
  config.compute_dtype = compute_dtype
  config.num_epochs, config.warmup_epochs, config.learning_rate = 1, 0.0, 0.1
  return config


def test_unknown_compute_dtype_is_an_error():
  config = w4a4_config("float16")
  with pytest.raises(ValueError, match=r"compute_dtype must be one of \['bfloat16', 'float32'\], "
                     r"got 'float16'"):
    models.create_model_for_run(config, 10)


def test_bfloat16_conv_quantizes_in_float32_so_every_level_is_exact():
  x = bfloat16_exact_images((2, 6, 6, 3)).astype(jnp.bfloat16)
  layer = QuantConv(4, weight_quantizer=UNIFORM4, input_quantizer=LSQ4, dtype=jnp.bfloat16)
  params = layer.init(test_models.rng(1), x)["params"]
  operands = []

  def recording_conv2d(x, kernel, *args):
    operands.append((x, kernel))
    return conv2d(x, kernel, *args)

  conv2d = layers.conv2d
  with mock.patch.object(layers, "conv2d", recording_conv2d):
    y = layer.apply({"params": params}, x)
  (x_operand, kernel_operand), = operands

  assert y.dtype == x_operand.dtype == kernel_operand.dtype == jnp.bfloat16
  assert params["kernel"].dtype == params["input_step"].dtype == jnp.float32
  # Each operand is the float32 quantizer's output rounded once to bfloat16 ...
  x_float32 = LSQ4(x.astype(jnp.float32), {"step": params["input_step"]})
  kernel_float32 = UNIFORM4(params["kernel"])
  np.testing.assert_array_equal(x_operand, x_float32.astype(jnp.bfloat16))
  np.testing.assert_array_equal(kernel_operand, kernel_float32.astype(jnp.bfloat16))
  # ... so every element keeps float32's integer level, and there are at most 2^4 of them.
  step = float(params["input_step"])
  levels = np.asarray(x_float32) / step
  np.testing.assert_array_equal(np.round(np.asarray(x_operand, np.float32) / step),
                                np.round(levels))
  assert len(np.unique(np.asarray(x_operand))) <= 16


def test_bfloat16_straight_through_gradients_match_float32():
  x = bfloat16_exact_images((4, 8, 8, 16))
  cotangent = jax.random.normal(test_models.rng(2), (4, 8, 8, 8))
  params = QuantConv(8, weight_quantizer=UNIFORM4, input_quantizer=LSQ4).init(
      test_models.rng(1), x)["params"]

  def gradients(dtype):
    layer = QuantConv(8, weight_quantizer=UNIFORM4, input_quantizer=LSQ4, dtype=dtype)
    loss = lambda p, x: jnp.sum(layer.apply({"params": p}, x).astype(jnp.float32) * cotangent)
    return jax.grad(loss, argnums=(0, 1))(params, x.astype(dtype))

  (params32, x32), (params16, x16) = gradients(jnp.float32), gradients(jnp.bfloat16)
  assert x16.dtype == jnp.bfloat16
  assert params16["kernel"].dtype == params16["input_step"].dtype == jnp.float32
  for expected, actual in [(x32, x16), (params32["kernel"], params16["kernel"])]:
    expected, actual = np.asarray(expected, np.float32), np.asarray(actual, np.float32)
    assert np.linalg.norm(actual - expected) <= GRADIENT_RTOL * np.linalg.norm(expected)
  # The step's gradient g sum_i dL/dy_i (round(v_i) - v_i) (LSQ) sums terms of both signs: its
  # error is bounded by GRADIENT_RTOL times the sum of their magnitudes.
  step = params["input_step"]
  quantized_x = LSQ4(x, {"step": step})
  kernel = UNIFORM4(params["kernel"])
  grad_quantized_x = jax.grad(lambda q: jnp.sum(
      layers.conv2d(q, kernel, (1, 1), ((1, 1), (1, 1))) * cotangent))(quantized_x)
  v = np.asarray(x / step)
  d_y_d_step = np.where(v > LSQ4.max_level, LSQ4.max_level, np.round(v) - v)
  magnitude = LSQ4.grad_scale(x) * np.sum(np.abs(np.asarray(grad_quantized_x) * d_y_d_step))
  assert abs(float(params16["input_step"]) - float(params32["input_step"])) <= (
      GRADIENT_RTOL * magnitude)


def test_bfloat16_model_computes_in_bfloat16_and_keeps_variables_and_logits_float32():
  model = models.create_model_for_run(w4a4_config("bfloat16"), 10)
  images = test_models.random_images((4, 8, 8, 3))
  variables = model.init(test_models.rng(), images, train=True)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}

  logits, updates = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=["batch_stats", "intermediates"], capture_intermediates=True))(
          variables, images)
  activations = updates["intermediates"]
  assert logits.dtype == jnp.float32
  assert activations["stem"]["conv"]["__call__"][0].dtype == jnp.bfloat16
  assert activations["stage2_block1"]["conv_bn1"]["bn"]["__call__"][0].dtype == jnp.bfloat16
  assert {leaf.dtype for leaf in jax.tree.leaves(updates["batch_stats"])} == {
      jnp.dtype(jnp.float32)}


def test_bfloat16_training_follows_float32_and_keeps_its_state_float32():
  mesh = parallel.create_mesh()
  runs = {}
  for compute_dtype in ("float32", "bfloat16"):
    config = w4a4_config(compute_dtype)
    config.learning_rate, config.label_smoothing = 0.01, 0.0
    state, losses, _ = test_train.run_method_steps(mesh, LOSS_STEPS, config)
    runs[compute_dtype] = state, np.asarray(losses)
  (_, losses32), (state16, losses16) = runs["float32"], runs["bfloat16"]
  np.testing.assert_allclose(losses16, losses32, atol=LOSS_ATOL)
  np.testing.assert_allclose(losses16.reshape(-1, 4).mean(axis=1),
                             losses32.reshape(-1, 4).mean(axis=1), atol=MEAN_LOSS_ATOL)
  assert losses16[-4:].mean() < 0.5 * losses16[:4].mean()
  leaves = jax.tree.leaves((state16.params, state16.batch_stats, state16.opt_state))
  assert {leaf.dtype for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.floating)} == {
      jnp.dtype(jnp.float32)}


def test_bfloat16_odgq_keeps_its_perturbation_bank_float32():
  config = w4a4_config("bfloat16", name="tiny")
  config.method = methods.method_config("odgq", replays=2)
  state, losses, _ = test_train.run_method_steps(parallel.create_mesh(), 1, config)
  assert np.isfinite(losses[0])
  float_leaves = [leaf for leaf in jax.tree.leaves(state.method_state)
                  if jnp.issubdtype(leaf.dtype, jnp.floating)]
  assert float_leaves and {leaf.dtype for leaf in float_leaves} == {jnp.dtype(jnp.float32)}
  assert np.all(np.isfinite(np.asarray(state.method_state["universal"])))
