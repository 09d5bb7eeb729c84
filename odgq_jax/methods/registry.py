"""Training methods by name, and their configs.

`config.method` is a ConfigDict holding `name` and exactly the fields of that method's dataclass,
so that an option that the method does not have is an error when overriding it
(`--config.method.beta=...`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, TypeVar

import ml_collections

from odgq_jax.methods.base import TrainingMethod

METHODS: dict[str, type[TrainingMethod]] = {}

M = TypeVar("M", bound=type[TrainingMethod])

# Set from the run's config, not from config.method.
_RUN_FIELDS = ("label_smoothing", "switchable_bits")


def register(name: str) -> Callable[[M], M]:
  """Class decorator: makes the method available as `config.method.name = name`."""

  def decorate(cls: M) -> M:
    if name in METHODS:
      raise ValueError(f"training method {name!r} registered twice")
    METHODS[name] = cls
    return cls

  return decorate


def _method_class(name: str) -> type[TrainingMethod]:
  if name not in METHODS:
    raise ValueError(f"unknown training method {name!r}; registered methods: {sorted(METHODS)}")
  return METHODS[name]


def method_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """`config.method` for method `name`: its default options, with `overrides` applied."""
  cls = _method_class(name)
  options = {f.name: f.default for f in dataclasses.fields(cls) if f.name not in _RUN_FIELDS}
  unknown = set(overrides) - set(options)
  if unknown:
    raise ValueError(f"method {name!r} has no option(s) {sorted(unknown)}; its options: "
                     f"{sorted(options)}")
  options.update(overrides)
  return ml_collections.ConfigDict({"name": name, **options})


def create_method(method_config_: ml_collections.ConfigDict, label_smoothing: float = 0.0,
                  switchable_bits: tuple[int, ...] = ()) -> TrainingMethod:
  """The method described by `config.method`, for a run with `config.label_smoothing` and
  `config.model.switchable_bits` (empty for a fixed-precision model).

  Raises:
    ValueError: unknown method or option, or a switchable-precision model for a method that trains
      fixed-precision ones (or the converse).
  """
  options = dict(method_config_)
  name = options.pop("name")
  cls = _method_class(name)
  options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
  if cls.trains_switchable_precision:
    options["switchable_bits"] = tuple(switchable_bits)
  elif switchable_bits:
    switchable = sorted(n for n, c in METHODS.items() if c.trains_switchable_precision)
    raise ValueError(f"model.switchable_bits is set, but method {name!r} trains fixed-precision "
                     f"models; switchable-precision models are trained by {switchable}")
  return cls(**options, label_smoothing=label_smoothing)


def create_method_for_run(config: ml_collections.ConfigDict) -> TrainingMethod:
  """The method of a run's config: `config.method` with the run's label smoothing and the model's
  switchable precisions."""
  return create_method(config.method, config.label_smoothing,
                       tuple(config.model.get("switchable_bits", ())))
