"""2-D convolution whose gradients are written out for the CPU: kernel gradient as matrix products,
input gradient as a plain convolution.

XLA:CPU lowers the kernel gradient of a convolution to a convolution with the (large) output
gradient as the "kernel", which is slow for the few-channel, large-image layers of CIFAR ResNets.
Written as one matrix product per kernel tap,

  dL/dW[i, j, :, :] = sum_{n, h, w} x_pad[n, s*h + i, s*w + j, :]^T dL/dy[n, h, w, :],

the gradient of ResNet-20's 16-channel 32x32 convs (7 of its 19) takes about half the time on 2 CPU
cores, and the other shapes cost about the same (`benchmarks/conv_kernel_grad.py`).

The input gradient is written out too, as a plain stride-1 convolution of the output gradient
(zero-dilated by the stride and padded) with the spatially flipped kernel, its in/out channels
swapped:

  dL/dx = conv(pad(dilate_s(dL/dy)), flip_hw(W)^T),  pad low = k - 1 - p_low,
                                                     pad high = k - 1 - p_high + r,

r being the input rows the strided forward pass never reached. XLA:CPU runs JAX's own transposed
convolution about 7x slower inside a `while` loop than outside it (jax-ml/jax#12868), which made
every attack iteration under `lax.fori_loop` (all the attacks of `odgq_jax/attacks`) several times
the cost of a forward-backward pass; this form runs at the same speed in and out of loops
(`benchmarks/xla_cpu_control_flow.py`).

On other backends (GPU, TPU) the native convolution gradient is used. Both compute the same values
(`tests/test_conv.py`).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
Padding = tuple[tuple[int, int], tuple[int, int]]


def _native_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                 padding: Padding) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, window_strides=strides, padding=padding,
                                      dimension_numbers=DIMENSION_NUMBERS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_with_matmul_kernel_grad(x, kernel, strides, padding):
  return _native_conv(x, kernel, strides, padding)


def _forward(x, kernel, strides, padding):
  return _native_conv(x, kernel, strides, padding), (x, kernel)


def _input_gradient(grad_y: jax.Array, kernel: jax.Array, input_shape: tuple[int, ...],
                    strides: tuple[int, int], padding: Padding) -> jax.Array:
  """dL/dx of `_native_conv` as a stride-1 convolution (the formula in the module doc)."""
  pads = [(0, 0, 0)]
  for axis, (size, stride, (low, high)) in enumerate(zip(kernel.shape[:2], strides, padding)):
    unreached = input_shape[1 + axis] + low + high - size - (grad_y.shape[1 + axis] - 1) * stride
    pads.append((size - 1 - low, size - 1 - high + unreached, stride - 1))
  pads.append((0, 0, 0))
  dilated = jax.lax.pad(grad_y, jnp.zeros((), grad_y.dtype), pads)
  flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
  return _native_conv(dilated, flipped, (1, 1), ((0, 0), (0, 0)))


def _backward(strides, padding, residuals, grad_y):
  x, kernel = residuals
  kernel_h, kernel_w, in_features, out_features = kernel.shape
  x_padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  batch, out_h, out_w, _ = grad_y.shape
  grad_y_rows = grad_y.reshape(-1, out_features)
  taps = []
  for i in range(kernel_h):
    for j in range(kernel_w):
      window = jax.lax.slice(
          x_padded, (0, i, j, 0),
          (batch, i + (out_h - 1) * strides[0] + 1, j + (out_w - 1) * strides[1] + 1,
           in_features), (1, strides[0], strides[1], 1))
      taps.append(window.reshape(-1, in_features).T @ grad_y_rows)
  grad_kernel = jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)
  return _input_gradient(grad_y, kernel, x.shape, strides, padding), grad_kernel


_conv_with_matmul_kernel_grad.defvjp(_forward, _backward)


def conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
           padding: str | Sequence[tuple[int, int]]) -> jax.Array:
  """NHWC x HWIO -> NHWC convolution (no dilation, no groups).

  Args:
    x: input [N, H, W, C_in].
    kernel: [kh, kw, C_in, C_out].
    strides: (height, width) strides.
    padding: "SAME", "VALID" or ((top, bottom), (left, right)).
  """
  strides = tuple(strides)
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], strides, padding)
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  if jax.default_backend() == "cpu":
    return _conv_with_matmul_kernel_grad(x, kernel, strides, padding)
  return _native_conv(x, kernel, strides, padding)
