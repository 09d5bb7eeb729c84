"""The quantizer interface and the registry of quantizers by name.

A quantizer is a frozen (hence hashable) dataclass holding its options, e.g. the bit-width. Calling
it maps a float tensor to its quantized (fake-quantized, still float) value; the gradient is defined
by an explicit `jax.custom_vjp` straight-through estimator (STE) in the quantizer's module.

Quantizers with learnable parameters (PACT's clipping level, LSQ's step size) describe them with
`init_params(x)`, which returns their initial values given the first tensor they see; the layer that
owns the quantizer stores them as Flax parameters and passes them back on every call. Stateless
quantizers return `{}`.

For export (`odgq_jax/export`), a quantizer with integer levels also gives its output as integer
codes, `integer_form(x, params)`: an `IntegerTensor` whose `dequantize()` is the quantizer's output
bit for bit, so that a forward pass reading the integers computes what training computed.

Conventions (all quantizers; where a paper defines its own levels, the quantizer follows the paper
and says so: LSQ's signed levels -2^(k-1) .. 2^(k-1) - 1, DoReFa's {2i/n - 1} without zero):

| quantity       | convention                                                              |
|----------------|-------------------------------------------------------------------------|
| rounding       | round half to even (`jnp.round`)                                        |
| signed k-bit   | symmetric integer levels -(2^(k-1) - 1) .. 2^(k-1) - 1 (2^k - 1 levels) |
| unsigned k-bit | integer levels 0 .. 2^k - 1 (2^k levels)                                |
| weight axes    | Flax layout: the output channel is the last axis; per-channel scales    |
|                | reduce over all other axes (keepdims), zero scales are guarded          |
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Mapping, Sequence, TypeVar

import jax
import jax.numpy as jnp

Params = Mapping[str, jax.Array]

MIN_BITS = 2
MAX_BITS = 8


@dataclasses.dataclass(frozen=True)
class IntegerTensor:
  """A quantized tensor as unsigned integer codes (affine quantization with a zero point):

    value = (codes - zero_point) * scale.

  Attributes:
    codes: uint8 array of the tensor's shape, each code in [0, 2^bits - 1].
    zero_point: the code of the value 0, an integer or, for the levels {-1, +1} of the sign, 0.5.
    scale: float array broadcastable to `codes` (one per output channel, keepdims, or one).
    bits: bits per code.
  """
  codes: jax.Array
  zero_point: float
  scale: jax.Array
  bits: int

  def dequantize(self) -> jax.Array:
    """(codes - zero_point) * scale, in the scale's dtype. codes - zero_point is an exact small
    integer (or half-integer), so this is the quantizer's integer level times its scale: the same
    float product the quantizer computes."""
    return (self.codes.astype(self.scale.dtype) - self.zero_point) * self.scale


def integer_tensor(levels: jax.Array, min_level: float, scale: jax.Array,
                   bits: int) -> IntegerTensor:
  """The `IntegerTensor` of integer-valued `levels` >= `min_level` times `scale`: codes =
  levels - min_level, zero point -min_level."""
  return IntegerTensor(codes=(levels - min_level).astype(jnp.uint8), zero_point=-min_level,
                       scale=jnp.asarray(scale), bits=bits)


@dataclasses.dataclass(frozen=True)
class Quantizer(abc.ABC):
  """Base class: a frozen dataclass of options; `__call__(x, params)` fake-quantizes x."""

  def init_params(self, x: jax.Array) -> dict[str, jax.Array]:
    """Initial values of the learnable parameters, given the first input `x`."""
    del x
    return {}

  def integer_form(self, x: jax.Array, params: Params | None = None) -> IntegerTensor:
    """`self(x, params)` as integer codes: `integer_form(x, params).dequantize()` equals it bit
    for bit.

    Raises:
      ValueError: the quantizer has no integer levels (full precision).
    """
    del x, params
    raise ValueError(f"quantizer {type(self).__name__} has no integer levels")

  @abc.abstractmethod
  def __call__(self, x: jax.Array, params: Params | None = None) -> jax.Array:
    """Returns the quantized value of `x` (same shape and dtype)."""


def check_bits(bits: int, name: str, low: int = MIN_BITS, high: int = MAX_BITS) -> None:
  """Raises ValueError unless `low <= bits <= high`."""
  if not isinstance(bits, int) or isinstance(bits, bool) or not low <= bits <= high:
    raise ValueError(
        f"quantizer {name!r}: bits must be an integer in [{low}, {high}], got {bits!r}")


def check_choice(value: Any, option: str, allowed: Sequence[Any], name: str) -> None:
  """Raises ValueError unless `value` is one of `allowed` (booleans must be real bools)."""
  if not any(type(value) is type(choice) and value == choice for choice in allowed):
    raise ValueError(
        f"quantizer {name!r}: {option} must be one of {list(allowed)}, got {value!r}")


def output_channel_axes(x: jax.Array, per_channel: bool) -> tuple[int, ...]:
  """Axes a scale reduces over: all but the last (output channel) one, or all of them."""
  return tuple(range(x.ndim - 1)) if per_channel else tuple(range(x.ndim))


def param_dtype(x: jax.Array) -> jnp.dtype:
  """Dtype of learnable parameters for input `x`: at least float32, even for bfloat16 inputs."""
  return jnp.promote_types(x.dtype, jnp.float32)


def get_param(params: Params | None, key: str, name: str) -> jax.Array:
  """Returns `params[key]`, or raises ValueError saying that `init_params` provides it."""
  if params is None or key not in params:
    raise ValueError(
        f"quantizer {name!r} needs params[{key!r}]; create it with `init_params(x)`, got "
        f"params with keys {sorted(params or {})}")
  return jnp.asarray(params[key])


QUANTIZERS: dict[str, type[Quantizer]] = {}

Q = TypeVar("Q", bound=type[Quantizer])


def register(name: str) -> Callable[[Q], Q]:
  """Class decorator: makes the quantizer available to `make_quantizer(name, ...)`."""

  def decorate(cls: Q) -> Q:
    if name in QUANTIZERS:
      raise ValueError(f"quantizer name {name!r} registered twice")
    QUANTIZERS[name] = cls
    return cls

  return decorate


def make_quantizer(name: str, **options: Any) -> Quantizer:
  """Builds the registered quantizer `name` with `options` (e.g. `bits=4`).

  Raises:
    ValueError: unknown name (the message lists the registered ones), an unknown option, or an
      option out of range (e.g. bits outside [2, 8]).
  """
  if name not in QUANTIZERS:
    raise ValueError(f"unknown quantizer {name!r}; registered quantizers: {sorted(QUANTIZERS)}")
  cls = QUANTIZERS[name]
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = set(options) - fields
  if unknown:
    raise ValueError(
        f"quantizer {name!r} has no option(s) {sorted(unknown)}; its options: {sorted(fields)}")
  return cls(**options)


def with_bits(quantizer: Quantizer, bits: int) -> Quantizer:
  """The same quantizer at `bits` bits (for switchable-precision models).

  Raises:
    ValueError: the quantizer has no bit-width (e.g. "none", "binary"), or bits is out of range.
  """
  if "bits" not in {f.name for f in dataclasses.fields(quantizer)}:
    raise ValueError(f"switchable precision needs quantizers with a bit-width; "
                     f"{type(quantizer).__name__} has none")
  return dataclasses.replace(quantizer, bits=bits)
