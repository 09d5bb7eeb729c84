"""odgq-jax: adversarially robust quantized and binary networks (ODG-Q) in JAX/Flax.

`odgq_jax.load_classifier(workdir)` loads a trained checkpoint, or its export (`odgq_jax.export`),
for evaluation (see `classifier`); it is imported on first use, so that `import odgq_jax.quant`
stays light.
"""
import importlib

_LAZY = {"Classifier": "odgq_jax.classifier", "load_classifier": "odgq_jax.classifier"}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'odgq_jax' has no attribute {name!r}")


__all__ = list(_LAZY)
