"""Tests of the quantizers: forward values, level counts, STE gradients, options and errors."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from odgq_jax import quant

BITS = [2, 3, 4, 8]  # Level tests: the ends of [2, 8] and the usual widths.


@pytest.fixture(params=[False, True], ids=["eager", "jit"])
def transform(request):
  """Runs each gradient test once as is and once under `jax.jit`."""
  return jax.jit if request.param else (lambda fn: fn)


def _cotangent(shape, seed=0):
  """A fixed random upstream gradient (so that sums do not hide wrong per-element gradients)."""
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _vjp(fn, transform, *args, seed=0):
  """Gradients of sum(fn(*args) * c) w.r.t. all args for a random cotangent c: (c, grads)."""
  out_shape = jax.eval_shape(fn, *args).shape
  cotangent = _cotangent(out_shape, seed)
  loss = lambda *a: jnp.sum(fn(*a) * cotangent)
  grads = transform(jax.grad(loss, argnums=tuple(range(len(args)))))(*args)
  return cotangent, grads


# Registry, options and errors.


def test_registry_holds_every_quantizer():
  assert set(quant.QUANTIZERS) == {"none", "uniform", "dorefa", "pact", "lsq", "binary"}
  assert isinstance(quant.make_quantizer("none"), quant.Identity)
  assert isinstance(quant.make_quantizer("uniform", bits=4), quant.SymmetricUniform)
  assert isinstance(quant.make_quantizer("dorefa", bits=4), quant.DoReFaWeight)
  assert isinstance(quant.make_quantizer("pact", bits=4), quant.PACT)
  assert isinstance(quant.make_quantizer("lsq", bits=4), quant.LSQ)
  assert isinstance(quant.make_quantizer("binary"), quant.Binary)


def test_unknown_name_lists_registered_names():
  with pytest.raises(ValueError, match="unknown quantizer 'foo'") as error:
    quant.make_quantizer("foo")
  for name in quant.QUANTIZERS:
    assert repr(name) in str(error.value)


@pytest.mark.parametrize("name", ["uniform", "dorefa", "pact", "lsq"])
@pytest.mark.parametrize("bits", [1, 9, 4.0, True])
def test_bad_bits_name_the_allowed_range(name, bits):
  with pytest.raises(ValueError, match=r"bits.*\[2, 8\]"):
    quant.make_quantizer(name, bits=bits)


@pytest.mark.parametrize("name,options", [
    ("none", {"bits": 4}),
    ("uniform", {"bits": 4, "signed": True}),
    ("binary", {"bits": 1}),
    ("pact", {"bits": 4, "alpha": 1.0}),
])
def test_unknown_option_is_rejected(name, options):
  with pytest.raises(ValueError, match="has no option"):
    quant.make_quantizer(name, **options)


@pytest.mark.parametrize("name,options,message", [
    ("binary", {"ste": "tanh"}, r"ste must be one of \['identity', 'clipped', 'approx_sign'\]"),
    ("binary", {"scale": 1}, r"scale must be one of \[True, False\]"),
    ("binary", {"learnable_threshold": 1}, r"learnable_threshold must be one of \[True, False\]"),
    ("uniform", {"bits": 4, "per_channel": "yes"}, r"per_channel must be one of \[True, False\]"),
    ("lsq", {"bits": 4, "signed": 0}, r"signed must be one of \[True, False\]"),
    ("pact", {"bits": 4, "init_alpha": 0.0}, "init_alpha must be a real number > 0"),
    ("pact", {"bits": 4, "init_alpha": -1.0}, "init_alpha must be a real number > 0"),
    ("pact", {"bits": 4, "init_alpha": "6"}, "init_alpha must be a real number > 0"),
])
def test_bad_option_values_name_the_allowed_values(name, options, message):
  with pytest.raises(ValueError, match=message):
    quant.make_quantizer(name, **options)


@pytest.mark.parametrize("name,options", [
    ("pact", {"bits": 4}), ("lsq", {"bits": 4}), ("binary", {"learnable_threshold": True})])
def test_missing_learnable_param_is_an_error(name, options):
  q = quant.make_quantizer(name, **options)
  with pytest.raises(ValueError, match="init_params"):
    q(jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="init_params"):
    q(jnp.ones((2, 3)), {})


def test_quantizers_are_hashable_static_arguments():
  a = quant.make_quantizer("lsq", bits=4)
  b = quant.make_quantizer("lsq", bits=4)
  assert a == b and hash(a) == hash(b)
  assert a != quant.make_quantizer("lsq", bits=4, signed=True)
  assert len({a, b, quant.make_quantizer("binary"), quant.make_quantizer("binary")}) == 2

  @jax.jit
  def apply(x):
    return quant.make_quantizer("uniform", bits=3)(x)

  apply_static = jax.jit(lambda q, x: q(x), static_argnums=0)
  x = jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)
  chex.assert_trees_all_close(apply_static(quant.make_quantizer("uniform", bits=3), x), apply(x))


def test_bits_properties():
  assert quant.make_quantizer("binary").bits == 1
  assert quant.make_quantizer("uniform", bits=3).max_level == 3
  assert (quant.LSQ(bits=3).min_level, quant.LSQ(bits=3).max_level) == (0, 7)
  assert (quant.LSQ(bits=3, signed=True).min_level, quant.LSQ(bits=3, signed=True).max_level) == (
      -4, 3)


@pytest.mark.parametrize("name,options", [
    ("none", {}),
    ("uniform", {"bits": 4}),
    ("dorefa", {"bits": 4}),
    ("pact", {"bits": 4}),
    ("lsq", {"bits": 4}),
    ("lsq", {"bits": 4, "signed": True}),
    ("binary", {"scale": True}),
    ("binary", {"learnable_threshold": True}),
])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shape_and_dtype_are_kept(name, options, dtype):
  q = quant.make_quantizer(name, **options)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 5)), dtype)
  params = q.init_params(x)
  for value in params.values():
    assert value.shape in ((), x.shape[-1:]) and value.dtype == jnp.float32
  y = q(x, params)
  assert y.shape == x.shape and y.dtype == x.dtype
  grads = jax.jit(jax.grad(lambda x, p: jnp.sum(q(x, p).astype(jnp.float32)), argnums=(0, 1)))(
      x, params)
  chex.assert_trees_all_equal_shapes_and_dtypes(grads, (x, params))
  chex.assert_tree_all_finite(grads)


# "none".


def test_identity_forward_and_gradient(transform):
  x = jnp.array([[-1.5, 0.0], [0.3, 7.0]])
  q = quant.make_quantizer("none")
  chex.assert_trees_all_equal(q(x), x)
  assert q.init_params(x) == {}
  cotangent, (grad,) = _vjp(q, transform, x)
  chex.assert_trees_all_close(grad, cotangent)


# "uniform".


def test_uniform_forward_per_channel():
  w = jnp.array([[1.0, -0.5], [0.25, 2.0], [-0.7, 0.1]])
  # 3 bits: levels -3..3. Column scales: 1/3 and 2/3.
  expected = np.array([[1.0, -2 / 3], [1 / 3, 2.0], [-2 / 3, 0.0]])
  chex.assert_trees_all_close(quant.make_quantizer("uniform", bits=3)(w), expected, atol=1e-6)


def test_uniform_forward_per_tensor():
  w = jnp.array([[0.9, -0.5], [0.25, 2.0], [-0.7, 0.1]])
  # One scale 2/3: w / s = [[1.35, -0.75], [0.375, 3], [-1.05, 0.15]].
  expected = np.array([[2 / 3, -2 / 3], [0.0, 2.0], [-2 / 3, 0.0]])
  q = quant.make_quantizer("uniform", bits=3, per_channel=False)
  chex.assert_trees_all_close(q(w), expected, atol=1e-6)


@pytest.mark.parametrize("bits", BITS)
def test_uniform_levels_per_channel(bits):
  half = np.random.default_rng(bits).normal(size=(2, 3, 4, 5)) * np.array([0.1, 1, 3, 10, 0.01])
  w = jnp.asarray(np.concatenate([half, -half], axis=0), jnp.float32)  # Both signs of each max.
  w_q = np.asarray(quant.make_quantizer("uniform", bits=bits)(w)).reshape(-1, 5)
  abs_max = np.abs(np.asarray(w)).reshape(-1, 5).max(axis=0)
  max_level = 2**(bits - 1) - 1
  for channel in range(5):
    values = np.unique(w_q[:, channel])
    assert len(values) <= 2**bits - 1
    np.testing.assert_allclose([values[0], values[-1]], [-abs_max[channel], abs_max[channel]],
                               rtol=1e-6)
    integer_levels = values / (abs_max[channel] / max_level)
    np.testing.assert_allclose(integer_levels, np.round(integer_levels), atol=1e-4)


def test_uniform_zero_channel_stays_zero_with_finite_gradient():
  w = jnp.array([[0.0, 0.5], [0.0, -1.0]])
  q = quant.make_quantizer("uniform", bits=4)
  chex.assert_trees_all_close(q(w)[:, 0], jnp.zeros(2))
  chex.assert_tree_all_finite(jax.grad(lambda w: jnp.sum(q(w)))(w))


@pytest.mark.parametrize("per_channel", [True, False])
def test_uniform_gradient_is_identity(transform, per_channel):
  w = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3, 2, 4)), jnp.float32)
  q = quant.make_quantizer("uniform", bits=2, per_channel=per_channel)
  cotangent, (grad,) = _vjp(q, transform, w)
  chex.assert_trees_all_close(grad, cotangent, atol=1e-6)


# "dorefa".


def test_dorefa_forward():
  w = jnp.array([0.1, 0.5, -1.0, 2.0])
  # 2 bits, n = 3: tanh(w) / (2 tanh(2)) + 1/2 = [0.552, 0.740, 0.105, 1.0]; * 3 rounds to
  # [2, 2, 0, 3]; 2 * i / 3 - 1 = [1/3, 1/3, -1, 1].
  expected = np.array([1 / 3, 1 / 3, -1.0, 1.0])
  chex.assert_trees_all_close(quant.make_quantizer("dorefa", bits=2)(w), expected, atol=1e-6)


@pytest.mark.parametrize("bits", BITS)
def test_dorefa_levels(bits):
  w = jnp.asarray(np.random.default_rng(bits).normal(size=(4, 4, 3, 8)), jnp.float32)
  w_q = np.asarray(quant.make_quantizer("dorefa", bits=bits)(w))
  levels = 2**bits - 1
  integer_levels = (w_q + 1) * levels / 2
  np.testing.assert_allclose(integer_levels, np.round(integer_levels), atol=1e-3)
  assert len(np.unique(w_q)) <= 2**bits
  assert np.abs(w_q).max() == pytest.approx(1.0)  # The largest |w| maps to an end level.


def test_dorefa_all_zero_weights_are_finite():
  q = quant.make_quantizer("dorefa", bits=3)
  w = jnp.zeros((2, 3))
  chex.assert_tree_all_finite((q(w), jax.grad(lambda w: jnp.sum(q(w)))(w)))


def test_dorefa_gradient_goes_through_tanh_and_max(transform):
  w = np.array([[0.3, -1.2], [0.05, 0.7], [-0.4, 0.9]], np.float32)  # Unique max |w| at -1.2.
  cotangent, (grad,) = _vjp(quant.make_quantizer("dorefa", bits=3), transform, jnp.asarray(w))
  # y = 2 * round_ste(n r) / n - 1, r = tanh(w) / (2 M) + 1/2, M = |tanh(w_m)|:
  # dL/dw_j = c_j (1 - t_j^2) / M - [j = m] sign(w_m) (1 - t_m^2) sum_i c_i t_i / M^2.
  t = np.tanh(w.astype(np.float64))
  m = np.unravel_index(np.argmax(np.abs(t)), t.shape)
  big_m = np.abs(t[m])
  expected = cotangent * (1 - t**2) / big_m
  expected[m] -= np.sign(w[m]) * (1 - t[m]**2) * np.sum(cotangent * t) / big_m**2
  chex.assert_trees_all_close(grad, expected, atol=1e-5)


# "pact".


def test_pact_forward_and_init():
  q = quant.make_quantizer("pact", bits=2)
  x = jnp.array([-1.0, 0.3, 1.2, 2.5, 7.0])
  params = q.init_params(x)
  chex.assert_trees_all_close(params, {"alpha": jnp.asarray(6.0)})
  # alpha = 2, n = 3, step 2/3: x * 3 / 2 clipped to [0, 3] = [0, 0.45, 1.8, 3, 3].
  expected = np.array([0.0, 0.0, 4 / 3, 2.0, 2.0])
  chex.assert_trees_all_close(q(x, {"alpha": jnp.asarray(2.0)}), expected, atol=1e-6)
  chex.assert_trees_all_close(
      quant.make_quantizer("pact", bits=3, init_alpha=1.5).init_params(x), {"alpha": 1.5})


@pytest.mark.parametrize("bits", BITS)
def test_pact_levels(bits):
  x = jnp.asarray(np.random.default_rng(bits).normal(scale=3.0, size=(8, 64)), jnp.float32)
  alpha = 2.5
  y = np.asarray(quant.make_quantizer("pact", bits=bits)(x, {"alpha": jnp.asarray(alpha)}))
  levels = 2**bits - 1
  assert len(np.unique(y)) <= 2**bits
  assert y.min() == 0 and y.max() == pytest.approx(alpha)
  integer_levels = y * levels / alpha
  np.testing.assert_allclose(integer_levels, np.round(integer_levels), atol=1e-3)


def test_pact_gradients(transform):
  alpha = 2.0
  x = np.array([[-1.0, 0.0, 0.4, 1.3], [2.0, 2.5, 7.0, -0.1]], np.float32)
  q = quant.make_quantizer("pact", bits=3)
  cotangent, (grad_x, grad_alpha) = _vjp(q, transform, jnp.asarray(x),
                                         {"alpha": jnp.asarray(alpha)})
  expected_grad_x = np.where((x >= 0) & (x <= alpha), cotangent, 0)
  expected_grad_alpha = np.sum(np.where(x > alpha, cotangent, 0))
  chex.assert_trees_all_close(grad_x, expected_grad_x)
  chex.assert_trees_all_close(grad_alpha["alpha"], expected_grad_alpha, atol=1e-6)


# "lsq".


def test_lsq_forward_unsigned():
  x = jnp.array([-0.5, 0.2, 0.74, 3.0])
  # 2 bits unsigned: Qn = 0, Qp = 3; x / 0.5 = [-1, 0.4, 1.48, 6].
  expected = np.array([0.0, 0.0, 0.5, 1.5])
  y = quant.make_quantizer("lsq", bits=2)(x, {"step": jnp.asarray(0.5)})
  chex.assert_trees_all_close(y, expected, atol=1e-6)


def test_lsq_forward_signed():
  w = jnp.array([-2.0, -0.6, 0.3, 0.9])
  # 2 bits signed: Qn = -2, Qp = 1; w / 0.5 = [-4, -1.2, 0.6, 1.8].
  expected = np.array([-1.0, -0.5, 0.5, 0.5])
  y = quant.make_quantizer("lsq", bits=2, signed=True)(w, {"step": jnp.asarray(0.5)})
  chex.assert_trees_all_close(y, expected, atol=1e-6)


@pytest.mark.parametrize("signed", [False, True])
def test_lsq_init_params(signed):
  q = quant.make_quantizer("lsq", bits=4, signed=signed)
  max_level = 7 if signed else 15
  x = jnp.array([[1.0, -2.0], [0.5, 0.5]])
  chex.assert_trees_all_close(q.init_params(x), {"step": 2 * 1.0 / math.sqrt(max_level)})
  zero_step = q.init_params(jnp.zeros((2, 2)))["step"]
  assert zero_step > 0
  assert np.isfinite(np.asarray(q(jnp.zeros((2, 2)), {"step": zero_step}))).all()


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("signed", [False, True])
def test_lsq_levels(bits, signed):
  q = quant.make_quantizer("lsq", bits=bits, signed=signed)
  x = jnp.asarray(np.random.default_rng(bits).normal(scale=4.0, size=(8, 64)), jnp.float32)
  step = 8.0 / 2**bits
  y = np.asarray(q(x, {"step": jnp.asarray(step)}))
  assert len(np.unique(y)) <= 2**bits
  integer_levels = y / step
  np.testing.assert_allclose(integer_levels, np.round(integer_levels), atol=1e-3)
  assert integer_levels.min() == pytest.approx(q.min_level)
  assert integer_levels.max() == pytest.approx(q.max_level)


@pytest.mark.parametrize("signed,shape,elements_per_step", [
    (False, (2, 3, 4), 12),  # Activations: features per example.
    (True, (3, 4), 12),  # Weights: all weights.
    (False, (5,), 5),  # Rank 1: no batch axis.
])
def test_lsq_grad_scale(signed, shape, elements_per_step):
  q = quant.make_quantizer("lsq", bits=3, signed=signed)
  max_level = 3 if signed else 7
  assert q.grad_scale(jnp.zeros(shape)) == pytest.approx(
      1 / math.sqrt(elements_per_step * max_level))


@pytest.mark.parametrize("signed", [False, True])
def test_lsq_gradients(transform, signed):
  step = 0.25
  # Values below, at and above the range ends, and inside it on both sides of a level.
  x = np.array([[[-1.3, -0.5, -0.3, -0.1], [0.0, 0.06, 0.2, 0.5]],
                [[0.7, 0.75, 0.8, 1.1], [1.75, 1.8, 2.4, -2.0]]], np.float32)
  q = quant.make_quantizer("lsq", bits=3, signed=signed)
  min_level, max_level = (-4, 3) if signed else (0, 7)
  elements_per_step = x.size if signed else x.size // x.shape[0]
  grad_scale = 1 / math.sqrt(elements_per_step * max_level)
  cotangent, (grad_x, grad_step) = _vjp(q, transform, jnp.asarray(x), {"step": jnp.asarray(step)})

  v = x.astype(np.float64) / step
  inside = (v >= min_level) & (v <= max_level)
  d_y_d_step = np.where(v < min_level, min_level, np.where(v > max_level, max_level,
                                                           np.round(v) - v))
  chex.assert_trees_all_close(grad_x, np.where(inside, cotangent, 0))
  chex.assert_trees_all_close(
      grad_step["step"], grad_scale * np.sum(cotangent * d_y_d_step), atol=1e-5)


# "binary".


def test_binary_forward():
  x = jnp.array([-2.0, -0.5, 0.0, 0.3, 3.0])
  y = quant.make_quantizer("binary")(x)
  chex.assert_trees_all_equal(y, jnp.array([-1.0, -1.0, 1.0, 1.0, 1.0]))


@pytest.mark.parametrize("ste", ["identity", "clipped", "approx_sign"])
def test_binary_levels(ste):
  x = jnp.asarray(np.random.default_rng(3).normal(size=(3, 3, 2, 4)), jnp.float32)
  y = np.asarray(quant.make_quantizer("binary", ste=ste)(x))
  assert set(np.unique(y)) == {-1.0, 1.0}
  y_scaled = np.asarray(quant.make_quantizer("binary", ste=ste, scale=True)(x)).reshape(-1, 4)
  scales = np.abs(np.asarray(x)).reshape(-1, 4).mean(axis=0)
  for channel in range(4):
    np.testing.assert_allclose(np.unique(y_scaled[:, channel]),
                               [-scales[channel], scales[channel]], rtol=1e-6)


@pytest.mark.parametrize("ste,expected_derivative", [
    ("identity", [1, 1, 1, 1, 1, 1, 1, 1, 1]),
    ("clipped", [0, 1, 1, 1, 1, 1, 1, 1, 0]),
    ("approx_sign", [0, 0, 0.5, 1, 2, 1, 0.5, 0, 0]),
])
def test_binary_ste_gradients(transform, ste, expected_derivative):
  x = jnp.array([-1.5, -1.0, -0.75, -0.5, 0.0, 0.5, 0.75, 1.0, 1.5])
  cotangent, (grad,) = _vjp(quant.make_quantizer("binary", ste=ste), transform, x)
  chex.assert_trees_all_close(grad, cotangent * np.array(expected_derivative, np.float32))


@pytest.mark.parametrize("ste", ["identity", "clipped", "approx_sign"])
def test_binary_scaled_gradient_includes_the_scale(transform, ste):
  w = np.array([[0.3, -1.2], [-0.05, 0.7], [-0.4, 0.9]], np.float32)
  cotangent, (grad,) = _vjp(quant.make_quantizer("binary", ste=ste, scale=True), transform,
                            jnp.asarray(w))
  # y = a * sign(w), a_c = mean_i |w_ic|: dL/dw_jc = c_jc a_c sign'(w_jc)
  #   + sign(w_jc) / n * sum_i c_ic sign(w_ic).
  derivative = {
      "identity": np.ones_like(w),
      "clipped": (np.abs(w) <= 1).astype(np.float32),
      "approx_sign": np.maximum(2 - 2 * np.abs(w), 0),
  }[ste]
  signs = np.where(w >= 0, 1.0, -1.0)
  scales = np.abs(w).mean(axis=0)
  expected = (cotangent * scales * derivative
              + signs / w.shape[0] * np.sum(cotangent * signs, axis=0))
  chex.assert_trees_all_close(grad, expected, atol=1e-6)


def test_binary_learnable_threshold_is_rsign():
  # ReActNet's RSign: sign(x - t_c) with one learnable threshold per channel (last axis), zero at
  # initialisation (the plain sign).
  q = quant.make_quantizer("binary", ste="approx_sign", learnable_threshold=True)
  x = jnp.array([[-0.2, 0.1, 0.6], [0.3, -0.4, 0.9]])
  params = q.init_params(x)
  chex.assert_trees_all_equal(params["threshold"], jnp.zeros(3))
  chex.assert_trees_all_equal(q(x, params), quant.make_quantizer("binary")(x))
  threshold = jnp.array([-0.3, 0.2, 0.7])
  chex.assert_trees_all_equal(q(x, {"threshold": threshold}),
                              jnp.array([[1.0, -1.0, -1.0], [1.0, -1.0, 1.0]]))


def test_binary_threshold_gradient_is_minus_the_summed_ste(transform):
  q = quant.make_quantizer("binary", ste="approx_sign", learnable_threshold=True)
  x = jnp.array([[-0.2, 0.1, 0.6], [0.3, -0.4, 0.9], [1.5, 0.0, -0.1]])
  threshold = jnp.array([-0.3, 0.2, 0.7])
  cotangent, (grad_x, grad_params) = _vjp(q, transform, x, {"threshold": threshold})
  shifted = np.asarray(x - threshold)
  expected_x = cotangent * np.maximum(2 - 2 * np.abs(shifted), 0)
  chex.assert_trees_all_close(grad_x, expected_x, atol=1e-6)
  chex.assert_trees_all_close(grad_params["threshold"], -expected_x.sum(axis=0), atol=1e-6)


def test_lsq_step_pushed_below_zero_does_not_kill_the_layer():
  # A negative step parameter (an optimizer update overshooting zero) acts as its magnitude, so
  # unsigned activations still quantize to non-zero levels and the step still gets a gradient.
  lsq = quant.LSQ(bits=4)
  x = jnp.linspace(0.0, 2.0, 16).reshape(2, 8)
  quantize = lambda step: lsq(x, {"step": step})
  np.testing.assert_allclose(quantize(jnp.float32(-0.1)), quantize(jnp.float32(0.1)))
  assert float(jnp.max(quantize(jnp.float32(-0.1)))) > 0
  step_grad = jax.grad(lambda step: jnp.sum(quantize(step)))
  assert float(step_grad(jnp.float32(-0.1))) == pytest.approx(-float(step_grad(jnp.float32(0.1))))
  assert float(step_grad(jnp.float32(-0.1))) != 0.0
