"""Native vs per-tap-matmul convolution kernel gradient at the ResNet-20 layer shapes (batch 128).

  python benchmarks/conv_kernel_grad.py

Prints, per layer shape, the median seconds of the forward pass and of the full gradient (input and
kernel) with `jax.lax.conv_general_dilated`'s own gradient and with `odgq_jax.models.conv.conv2d`.
"""
import json
import statistics
import time

import jax
import jax.numpy as jnp

from odgq_jax.models.conv import conv2d

# (channels in, channels out, image size, stride) of ResNet-20's 3x3 convs.
RESNET20_CONVS = ((16, 16, 32, 1), (16, 32, 32, 2), (32, 32, 16, 1), (32, 64, 16, 2),
                  (64, 64, 8, 1))
BATCH = 128
PADDING = ((1, 1), (1, 1))


def median_seconds(fn, *args, repeats=10):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def native(x, kernel, strides):
  return jax.lax.conv_general_dilated(x, kernel, strides, PADDING,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def main():
  rows = []
  for c_in, c_out, size, stride in RESNET20_CONVS:
    x = jax.random.normal(jax.random.PRNGKey(0), (BATCH, size, size, c_in))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, c_in, c_out))
    strides = (stride, stride)
    grad = lambda conv: jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) ** 2), argnums=(0, 1)))
    rows.append({
        "shape": f"{c_in}->{c_out} @ {size}x{size} stride {stride}",
        "forward": median_seconds(jax.jit(lambda x, k: native(x, k, strides)), x, kernel),
        "native_grad": median_seconds(grad(lambda x, k: native(x, k, strides)), x, kernel),
        "matmul_grad": median_seconds(grad(lambda x, k: conv2d(x, k, strides, PADDING)), x, kernel),
    })
  for row in rows:
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
  main()
