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
_RUN_FIELDS = ("label_smoothing",)


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


def create_method(method_config_: ml_collections.ConfigDict,
                  label_smoothing: float = 0.0) -> TrainingMethod:
  """The method described by `config.method`."""
  options = dict(method_config_)
  cls = _method_class(options.pop("name"))
  options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
  return cls(**options, label_smoothing=label_smoothing)
