"""`conv2d`'s CPU kernel gradient (one matmul per tap) equals the native convolution gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from odgq_jax.models.conv import conv2d


@pytest.mark.parametrize("kernel_size,strides,padding,image_size", [
    (3, 1, ((1, 1), (1, 1)), 8), (3, 2, ((1, 1), (1, 1)), 9), (1, 2, ((0, 0), (0, 0)), 8),
    (7, 2, ((3, 3), (3, 3)), 12), (3, 2, "SAME", 8), (3, 1, "VALID", 7)])
def test_gradients_match_native_convolution(kernel_size, strides, padding, image_size):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, image_size, image_size, 3))
  kernel = jax.random.normal(jax.random.PRNGKey(1), (kernel_size, kernel_size, 3, 5))

  def native(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (strides, strides), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  loss = lambda conv: lambda x, k: jnp.sum(jnp.sin(conv(x, k)))
  expected = jax.grad(loss(native), argnums=(0, 1))(x, kernel)
  actual = jax.jit(jax.grad(loss(lambda x, k: conv2d(x, k, (strides, strides), padding)),
                            argnums=(0, 1)))(x, kernel)
  np.testing.assert_allclose(conv2d(x, kernel, (strides, strides), padding), native(x, kernel),
                             rtol=1e-5, atol=1e-5)
  for e, a in zip(expected, actual):
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)
