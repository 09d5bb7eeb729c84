"""Quantizers by name: `make_quantizer("lsq", bits=4)`; see `base` for the interface.

Importing this package imports every quantizer module, which registers its quantizers.
"""
from odgq_jax.quant.base import (QUANTIZERS, IntegerTensor, Quantizer, make_quantizer,
                                 with_bits)
from odgq_jax.quant.binary import Binary
from odgq_jax.quant.dorefa import DoReFaWeight
from odgq_jax.quant.identity import Identity
from odgq_jax.quant.lsq import LSQ
from odgq_jax.quant.pact import PACT
from odgq_jax.quant.uniform import SymmetricUniform

__all__ = [
    "QUANTIZERS",
    "Binary",
    "DoReFaWeight",
    "Identity",
    "IntegerTensor",
    "LSQ",
    "PACT",
    "Quantizer",
    "SymmetricUniform",
    "make_quantizer",
    "with_bits",
]
