"""2-D convolution whose kernel gradient is computed as a sum of matrix products on the CPU.

XLA:CPU lowers the kernel gradient of a convolution to a convolution with the (large) output
gradient as the "kernel", which is slow for the few-channel, large-image layers of CIFAR ResNets.
Written as one matrix product per kernel tap,

  dL/dW[i, j, :, :] = sum_{n, h, w} x_pad[n, s*h + i, s*w + j, :]^T dL/dy[n, h, w, :],

the gradient of ResNet-20's 16-channel 32x32 convs (7 of its 19) takes about half the time on 2 CPU
cores, and the other shapes cost about the same (`benchmarks/conv_kernel_grad.py`). On other
backends (GPU, TPU) the native convolution gradient is used. Both compute the same values
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


def _backward(strides, padding, residuals, grad_y):
  x, kernel = residuals
  kernel_h, kernel_w, in_features, out_features = kernel.shape
  _, input_vjp = jax.vjp(lambda x: _native_conv(x, kernel, strides, padding), x)
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
  return input_vjp(grad_y)[0], grad_kernel


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
