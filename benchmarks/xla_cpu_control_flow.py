"""The same convolution-stack gradient on XLA:CPU without control flow, in `lax.switch`, in loops.

  python benchmarks/xla_cpu_control_flow.py

XLA:CPU ran JAX's transposed convolution (a convolution's input gradient) about 7x more slowly
inside control flow, which is why the training methods unrolled their loops in Python and why
Double-Win Quant's step (`lax.switch` over precisions) was slow; `odgq_jax.models.conv` now writes
the CPU input gradient as a plain convolution, and this benchmark checks that the four variants
cost the same. The work is the input and kernel gradient of 8 ResNet-20-shaped 3x3 convs (16
channels, 32x32, batch 64, `odgq_jax.models.conv`), done twice per call, as:
- python_loop: a Python loop of 2, no control flow in the compiled graph (what the code does);
- switch: each call inside a `lax.switch` over 3 identical branches;
- fori_rolled: a `lax.fori_loop` of 2 iterations;
- fori_unrolled_1: a `lax.fori_loop(..., unroll=True)` of 1 iteration, twice (how FGSM-RS's single
  crafting step was written: JAX keeps a one-trip loop).
Prints the median seconds of each and its ratio to python_loop.
"""
import json

import jax
import jax.numpy as jnp

from odgq_jax.models.conv import conv2d

from conv_kernel_grad import median_seconds  # benchmarks/ is on sys.path when run as a script

NUM_CONVS = 8
SHAPE = (64, 32, 32, 16)
PADDING = ((1, 1), (1, 1))
REPEATS = 9


def loss(x, kernels):
  for kernel in kernels:
    x = jax.nn.relu(conv2d(x, kernel, (1, 1), PADDING))
  return jnp.mean(x ** 2)


def gradient_step(x, kernels):
  """One gradient evaluation; returns x moved along its input gradient, kernels unchanged."""
  grad_x, grad_k = jax.grad(loss, argnums=(0, 1))(x, kernels)
  return x + 1e-3 * grad_x + 0 * sum(jnp.sum(g) for g in grad_k)


def python_loop(x, kernels, index):
  del index
  for _ in range(2):
    x = gradient_step(x, kernels)
  return x


def switch(x, kernels, index):
  for _ in range(2):
    x = jax.lax.switch(index, [gradient_step] * 3, x, kernels)
  return x


def fori_rolled(x, kernels, index):
  del index
  return jax.lax.fori_loop(0, 2, lambda _, x: gradient_step(x, kernels), x)


def fori_unrolled_1(x, kernels, index):
  del index
  for _ in range(2):
    x = jax.lax.fori_loop(0, 1, lambda _, x: gradient_step(x, kernels), x, unroll=True)
  return x


def main():
  key = jax.random.PRNGKey(0)
  x = jax.random.uniform(key, SHAPE)
  kernels = [0.1 * jax.random.normal(jax.random.fold_in(key, i), (3, 3, SHAPE[-1], SHAPE[-1]))
             for i in range(NUM_CONVS)]
  index = jnp.int32(1)
  results = {fn.__name__: median_seconds(jax.jit(fn), x, kernels, index, repeats=REPEATS)
             for fn in (python_loop, switch, fori_rolled, fori_unrolled_1)}
  for name, seconds in results.items():
    print(json.dumps({"variant": name, "seconds": round(seconds, 4),
                      "ratio_to_python_loop": round(seconds / results["python_loop"], 2)}))


if __name__ == "__main__":
  main()
