"""k-bit integer codes packed into bytes, for any k from 1 to 8.

The codes, in C order, form one stream of bits, each code taking k of them, least significant bit
first; the stream fills bytes from their least significant bit up:

  bit j of code i is bit (i k + j) mod 8 of byte floor((i k + j) / 8).

So 8-bit codes are one per byte, 4-bit codes two per byte (code 2m in the low half of byte m) and
1-bit codes eight per byte, as `numpy.packbits(..., bitorder="little")` would store them; the last
byte is padded with zero bits. A tensor of n codes takes ceil(n k / 8) bytes.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

MIN_BITS = 1
MAX_BITS = 8


def _check_bits(bits: int) -> None:
  if not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
    raise ValueError(f"bits per code must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")


def packed_size(num_codes: int, bits: int) -> int:
  """Bytes that `num_codes` codes of `bits` bits take: ceil(num_codes * bits / 8)."""
  _check_bits(bits)
  return -(-num_codes * bits // 8)


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
  """The codes (unsigned integers < 2^bits, any shape) packed into a uint8 vector (module doc).

  Raises:
    ValueError: `bits` is not in [1, 8], or a code does not fit in `bits` bits.
  """
  _check_bits(bits)
  codes = np.asarray(codes).reshape(-1)
  if codes.size and (codes.min() < 0 or codes.max() >= 2**bits):
    raise ValueError(f"codes must be integers in [0, {2**bits - 1}] to pack them in {bits} bits, "
                     f"got values in [{codes.min()}, {codes.max()}]")
  stream = (codes.astype(np.uint8)[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
  return np.packbits(stream.reshape(-1), bitorder="little")


def unpack(packed: jax.Array | np.ndarray, bits: int, shape: Sequence[int]) -> jax.Array:
  """The uint8 codes of `shape` that `pack` stored in `packed`; traceable, so a jitted or exported
  function can keep the packed bytes as its constant and unpack them itself.

  Raises:
    ValueError: `bits` is not in [1, 8], or `packed` has not the ceil(n bits / 8) bytes that the
      n codes of `shape` take.
  """
  num_codes = math.prod(shape)
  if np.shape(packed) != (packed_size(num_codes, bits),):
    raise ValueError(f"{math.prod(shape)} codes of {bits} bits take "
                     f"{packed_size(num_codes, bits)} bytes, got packed bytes of shape "
                     f"{np.shape(packed)}")
  packed = jnp.asarray(packed, jnp.uint8)
  stream = (packed[:, None] >> jnp.arange(8, dtype=jnp.uint8)) & 1
  code_bits = stream.reshape(-1)[:num_codes * bits].reshape(num_codes, bits)
  codes = jnp.sum(code_bits << jnp.arange(bits, dtype=jnp.uint8), axis=1, dtype=jnp.uint8)
  return codes.reshape(tuple(shape))
