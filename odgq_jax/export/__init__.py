"""Deployment export: a trained classifier as an artefact that runs without this package.

  from odgq_jax import export
  export.export_checkpoint("runs/cifar10_resnet20_w4a4_odgq", "exports/odgq")

`exporter` builds it, `integer_model` holds the integer weights and the forward pass that reads
them, `packing` the k-bit code packing, `artefact` the files (forward.jax_exported, weights/,
metadata.json) and their checks; `odgq_jax.load_classifier` loads an export as it loads a
checkpoint. Format and guarantees: docs/export.md.

The modules are imported on first use, so that `odgq_jax.classifier` can import `artefact` alone.
"""
import importlib

_LAZY = {
    "export_checkpoint": "odgq_jax.export.exporter",
    "export_classifier": "odgq_jax.export.exporter",
    "ExportError": "odgq_jax.export.artefact",
    "read_export": "odgq_jax.export.artefact",
    "read_weights": "odgq_jax.export.artefact",
}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'odgq_jax.export' has no attribute {name!r}")


__all__ = list(_LAZY)
