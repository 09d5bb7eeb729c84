"""A trained model as integer weights, and the forward pass that reads only them.

`deployment_variables(model, variables, image_shape)` turns a model's training variables into its
deployment variables: a Flax `{"params": ...}` tree in the same layout (module path, then name),
with no float copy of a quantized kernel and no BatchNorm statistics:

| layer | training variables | deployment variables |
| --- | --- | --- |
| conv / dense, quantized kernel | `kernel` (float32) and its quantizer's params (`weight_step`) | `kernel_codes` (uint8, the k-bit codes packed, `packing.py`), `kernel_bits`, `kernel_shape`, `kernel_zero_point`, `kernel_scale` (per output channel or one): kernel = (codes - zero_point) * scale |
| conv / dense, full-precision kernel | `kernel` | `kernel` |
| BatchNorm | `scale`, `bias`; statistics `mean`, `var` | `mean`, `multiplier` = scale / sqrt(var + eps), `bias`: y = (x - mean) * multiplier + bias |
| everything else | `bias`, the input quantizers' params (`input_step`, `input_alpha`), RPReLU's, ... | the same |

A switchable-precision model's hidden layers hold one set of kernel entries per precision, suffixed
as their quantizer params are (`kernel_codes_4bit`).

BatchNorm is folded where that is exact. Its four vectors always become the per-channel affine
above, its multiplier computed by Flax's own arithmetic, once. In a full-precision model (every
quantizer "none"), each BatchNorm that follows a conv in a `ConvBN` unit is folded further into the
conv: kernel * multiplier, the BatchNorm keeping only its per-channel offset, `bias` = bias - mean *
multiplier (y = x + bias). That is exact in real arithmetic and changes the float result by
rounding error only, which nothing downstream amplifies. In a quantized model the BatchNorm stays a
separate affine: folded into a quantized kernel it would change the integer levels, and the float
error of a reordered sum ahead of an activation quantizer can move a value across a rounding
boundary, one level.

`deployed_logits_fn(model, deployment)` runs the model's own forward pass
(`classifier.model_logits`) on the deployment variables with two methods replaced
(`flax.linen.intercept_methods`): a layer's `quantized_kernel` dequantizes its codes and a
BatchNorm applies its affine. Everything else (normalisation, activation quantizers, pooling,
shortcuts, the expectation over precisions) is the model's code, so the deployed logits equal the
training-time eval logits: the dequantized kernel is the weight quantizer's output bit for bit
(`quant.IntegerTensor`), and the affine is Flax's BatchNorm arithmetic in its order.
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from odgq_jax import classifier as classifier_lib
from odgq_jax import quant
from odgq_jax.export import packing
from odgq_jax.models.common import ConvBN
from odgq_jax.models.layers import KERNEL_PARAM_NAME, QuantizedLinearLayer, quantizer_param_names

Path = tuple[str, ...]

# Names of the deployment entries of a quantized kernel (each followed by the layer's
# `quantizer_param_suffix`) and of a BatchNorm.
KERNEL_CODES = "kernel_codes"
KERNEL_BITS = "kernel_bits"
KERNEL_SHAPE = "kernel_shape"
KERNEL_ZERO_POINT = "kernel_zero_point"
KERNEL_SCALE = "kernel_scale"
NORM_MEAN = "mean"
NORM_MULTIPLIER = "multiplier"
NORM_BIAS = "bias"

_QUANTIZER_FIELDS = ("weight_quantizer", "act_quantizer", "first_last_weight_quantizer",
                     "first_last_act_quantizer")


def is_full_precision(model: nn.Module) -> bool:
  """Whether no quantizer of `model` quantizes anything (all four are "none")."""
  return all(isinstance(getattr(model, field), quant.Identity) for field in _QUANTIZER_FIELDS)


def deployment_variables(model: nn.Module, variables: Any,
                         image_shape: tuple[int, ...]) -> dict[str, Any]:
  """The deployment variables (module doc) of `model` with training `variables`, as numpy arrays.

  Runs the model once, eagerly, on a zero image of `image_shape`, to meet every layer with its
  quantizers (a switchable-precision model once per precision).

  Raises:
    ValueError: a variable collection other than params and BatchNorm statistics, which the
      deployment forward pass would not have.
  """
  params = {path: np.asarray(value)
            for path, value in flax.traverse_util.flatten_dict(variables["params"]).items()}
  statistics = flax.traverse_util.flatten_dict(variables.get("batch_stats", {}))
  others = sorted(set(variables) - {"params", "batch_stats"})
  if others:
    raise ValueError(f"cannot export variable collections {others}; only params and BatchNorm "
                     "statistics (batch_stats)")
  deployment, replaced, conv_bn_units = dict(params), set(), []
  read_statistics = set()

  def collect(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, QuantizedLinearLayer) and context.method_name == "quantized_kernel":
      entries, consumed = _kernel_entries(module)
      deployment.update(entries)
      replaced.update(consumed)
    elif isinstance(module, nn.BatchNorm) and context.method_name == "__call__":
      deployment.update(_norm_entries(module))
      replaced.add(module.path + ("scale",))
      read_statistics.update({module.path + ("mean",), module.path + ("var",)})
    elif isinstance(module, ConvBN) and context.method_name == "__call__":
      conv_bn_units.append(module.path)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(collect):
    classifier_lib.model_logits(model, variables, jnp.zeros((1, *image_shape), jnp.float32))
  unread = sorted("/".join(path) for path in set(statistics) - read_statistics)
  if unread:
    raise ValueError(f"cannot export statistics {unread}: not those of a BatchNorm")
  for path in replaced:
    deployment.pop(path, None)
  if is_full_precision(model):
    for unit in conv_bn_units:
      _fold_into_conv(deployment, conv=unit + ("conv",), norm=unit + ("bn",))
  return {"params": flax.traverse_util.unflatten_dict(deployment)}


def _kernel_entries(module: QuantizedLinearLayer) -> tuple[dict[Path, np.ndarray], set[Path]]:
  """The deployment entries of a layer's quantized kernel, and the training params they replace;
  nothing for a full-precision kernel, which stays as it is."""
  quantizer, suffix = module.weight_quantizer, module.quantizer_param_suffix
  if isinstance(quantizer, quant.Identity):
    return {}, set()
  kernel = module.get_variable("params", KERNEL_PARAM_NAME)
  names = quantizer_param_names(quantizer, kernel, "weight", suffix)
  integer = quantizer.integer_form(
      kernel, {name: module.get_variable("params", param) for name, param in names.items()})
  path = module.path
  entries = {
      path + (KERNEL_CODES + suffix,): packing.pack(np.asarray(integer.codes), integer.bits),
      path + (KERNEL_BITS + suffix,): np.asarray(integer.bits, np.int32),
      path + (KERNEL_SHAPE + suffix,): np.asarray(kernel.shape, np.int32),
      path + (KERNEL_ZERO_POINT + suffix,): np.asarray(integer.zero_point, np.float32),
      path + (KERNEL_SCALE + suffix,): np.asarray(integer.scale, np.float32),
  }
  return entries, {path + (KERNEL_PARAM_NAME,), *(path + (param,) for param in names.values())}


def _norm_entries(module: nn.BatchNorm) -> dict[Path, np.ndarray]:
  """A BatchNorm's affine: mean, multiplier = rsqrt(var + eps) * scale (Flax's order), bias."""
  mean = module.get_variable("batch_stats", "mean")
  multiplier = jax.lax.rsqrt(module.get_variable("batch_stats", "var") + module.epsilon)
  if module.use_scale:
    multiplier = multiplier * module.get_variable("params", "scale")
  bias = module.get_variable("params", "bias") if module.use_bias else jnp.zeros_like(mean)
  return {module.path + (NORM_MEAN,): np.asarray(mean),
          module.path + (NORM_MULTIPLIER,): np.asarray(multiplier),
          module.path + (NORM_BIAS,): np.asarray(bias)}


def _fold_into_conv(deployment: dict[Path, np.ndarray], conv: Path, norm: Path) -> None:
  """Folds the BatchNorm `norm` into the full-precision conv `conv` before it (module doc)."""
  if conv + ("bias",) in deployment:
    return  # a conv with its own bias is left unfolded
  multiplier = deployment.pop(norm + (NORM_MULTIPLIER,))
  mean = deployment.pop(norm + (NORM_MEAN,))
  deployment[conv + (KERNEL_PARAM_NAME,)] = deployment[conv + (KERNEL_PARAM_NAME,)] * multiplier
  deployment[norm + (NORM_BIAS,)] = deployment[norm + (NORM_BIAS,)] - mean * multiplier


def deployed_logits_fn(model: nn.Module, deployment: dict[str, Any]) -> Callable[[jax.Array],
                                                                                  jax.Array]:
  """images -> logits of `model` computed from its deployment variables alone (module doc)."""

  def logits(images: jax.Array) -> jax.Array:
    with nn.intercept_methods(_read_deployment_variables):
      return classifier_lib.model_logits(model, _runtime_values(deployment), images)

  return logits


def _runtime_values(deployment: dict[str, Any]) -> dict[str, Any]:
  """The deployment variables behind an optimization barrier, but for the int32 kernel bits and
  shapes, which the forward pass reads at trace time.

  Compiled with the variables as constants, XLA would rewrite arithmetic on them, e.g. an LSQ
  division x / step into x * (1 / step), which rounds differently and moves a value across a
  rounding boundary now and then. Behind the barrier the constants are opaque values, as the
  variables of the training-time eval step are, and the deployed arithmetic is the same.
  """
  leaves, treedef = jax.tree.flatten(deployment)
  is_static = [np.asarray(leaf).dtype == np.int32 for leaf in leaves]
  dynamic = jax.lax.optimization_barrier(
      [jnp.asarray(leaf) for leaf, static in zip(leaves, is_static) if not static])
  dynamic = iter(dynamic)
  return jax.tree.unflatten(treedef, [leaf if static else next(dynamic)
                                      for leaf, static in zip(leaves, is_static)])


def _read_deployment_variables(next_fun, args, kwargs, context):
  """The interceptor of the deployed forward pass: dequantized kernels, BatchNorm affines."""
  module = context.module
  if isinstance(module, QuantizedLinearLayer) and context.method_name == "quantized_kernel":
    return _dequantized_kernel(module, *args, **kwargs, next_fun=next_fun)
  if isinstance(module, nn.BatchNorm) and context.method_name == "__call__":
    return _apply_norm(module, args[0])  # the deployed model is in eval mode
  return next_fun(*args, **kwargs)


def _dequantized_kernel(module: QuantizedLinearLayer, kernel_shape, next_fun) -> jax.Array:
  suffix = module.quantizer_param_suffix
  read = lambda name: module.get_variable("params", name + suffix)
  codes = read(KERNEL_CODES)
  if codes is None:  # a full-precision kernel: the layer reads `kernel` itself
    return next_fun(kernel_shape)
  shape = tuple(int(d) for d in np.asarray(read(KERNEL_SHAPE)))
  if shape != tuple(kernel_shape):
    raise ValueError(f"{'/'.join(module.path)}: the export's kernel has shape {list(shape)}, the "
                     f"model's {list(kernel_shape)}")
  bits = int(np.asarray(read(KERNEL_BITS)))
  return quant.IntegerTensor(codes=packing.unpack(codes, bits, shape),
                             zero_point=read(KERNEL_ZERO_POINT),
                             scale=jnp.asarray(read(KERNEL_SCALE)), bits=bits).dequantize()


def _apply_norm(module: nn.BatchNorm, x: jax.Array) -> jax.Array:
  """y = (x - mean) * multiplier + bias, or x + bias where it was folded into the conv before it,
  in the BatchNorm's output dtype."""
  read = lambda name: module.get_variable("params", name)
  multiplier = read(NORM_MULTIPLIER)
  y = x + read(NORM_BIAS) if multiplier is None else (x - read(NORM_MEAN)) * multiplier + read(
      NORM_BIAS)
  return y.astype(module.dtype if module.dtype is not None else y.dtype)
