"""The run record `workdir/run.json`: what a training run did, as data.

`train_and_evaluate` keeps one record per workdir, written from process 0 at every checkpoint
(every evaluation included) and at the end, atomically (a temporary file renamed over the old one),
so that a reader never sees half a record. It holds

  config              the run's config, as in config.json
  command             the command line of the process (`sys.argv`), e.g. launch/train.py's
  evals               [{"step", "epoch", "loss", "accuracy"}], one per evaluation, by step
  segments            [{"start_step", "end_step", "wall_seconds"}], one per start of the run: the
                      first, then one per resume
  wall_seconds        the segments' wall time added up (start-up and compilation included)
  seconds_per_update  timed seconds / timed updates: the mean over the intervals between log lines,
                      which leave out each segment's first step (compilation) and evaluation
  timed_seconds, timed_updates   the sums behind seconds_per_update
  updates             optimizer updates done (the step the record was written at)
  machine, versions   the machine and package versions of the latest segment

A resumed run reads the record back, drops the evaluations after the step it resumes from (they
are computed again) and adds a segment, so wall time and timing accumulate over the segments.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
import time
from typing import Any

import jax
import ml_collections

RUN_RECORD_FILE = "run.json"

# Distributions whose versions the record keeps; the first installed name of each entry is used
# (tensorflow is installed as tensorflow-cpu).
PACKAGES = {
    "jax": ("jax",), "jaxlib": ("jaxlib",), "flax": ("flax",), "optax": ("optax",),
    "orbax-checkpoint": ("orbax-checkpoint",), "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "tensorflow-datasets": ("tensorflow-datasets",), "numpy": ("numpy",),
}


def package_versions() -> dict[str, str | None]:
  """Installed versions of PACKAGES and of Python (None for a package that is not installed)."""
  versions = {}
  for name, distributions in PACKAGES.items():
    versions[name] = None
    for distribution in distributions:
      try:
        versions[name] = importlib.metadata.version(distribution)
        break
      except importlib.metadata.PackageNotFoundError:
        pass
  versions["python"] = platform.python_version()
  return versions


def machine() -> dict[str, Any]:
  """The host and the JAX devices the run uses."""
  devices = jax.devices()
  return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "jax_backend": jax.default_backend(),
          "device_kind": devices[0].device_kind, "device_count": len(devices),
          "process_count": jax.process_count()}


def load(workdir: str) -> dict[str, Any] | None:
  """The record in `workdir`, or None if there is none.

  Raises:
    ValueError: the file is not a JSON record (the message names it).
  """
  path = os.path.join(workdir, RUN_RECORD_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      record = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); move it away to start a new record") from e
  if not isinstance(record, dict) or not {"evals", "segments"} <= set(record):
    raise ValueError(f"{path} is not a run record (no 'evals' and 'segments')")
  return record


class RunRecord:
  """The record of one segment of a run, continuing the workdir's earlier segments.

  Args:
    workdir: the run's directory.
    config: the run's config.
    start_step: the step this segment starts from (the restored checkpoint's, 0 for a new run).
    steps_per_epoch: optimizer updates per epoch, to give each evaluation its epoch.
    started: `time.perf_counter()` when the segment started.
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict, start_step: int,
               steps_per_epoch: int, started: float):
    self.path = os.path.join(workdir, RUN_RECORD_FILE)
    self._steps_per_epoch = steps_per_epoch
    self._started = started
    earlier = load(workdir) or {"evals": [], "segments": [], "timed_seconds": 0.0,
                                "timed_updates": 0}
    self._record = {
        "config": json.loads(config.to_json_best_effort()),
        "command": list(sys.argv),
        "evals": [e for e in earlier["evals"] if e["step"] <= start_step],
        "segments": earlier["segments"] + [
            {"start_step": start_step, "end_step": start_step, "wall_seconds": 0.0}],
        "wall_seconds": 0.0,
        "seconds_per_update": None,
        "timed_seconds": float(earlier.get("timed_seconds", 0.0)),
        "timed_updates": int(earlier.get("timed_updates", 0)),
        "updates": start_step,
        "machine": machine(),
        "versions": package_versions(),
    }

  @property
  def evals(self) -> list[dict[str, Any]]:
    return self._record["evals"]

  def add_timing(self, seconds: float, updates: int) -> None:
    """Adds a timed interval: `updates` optimizer updates in `seconds` (no compilation, no eval)."""
    if updates > 0:
      self._record["timed_seconds"] += seconds
      self._record["timed_updates"] += updates

  def add_eval(self, step: int, metrics: dict[str, float]) -> None:
    """Adds the evaluation at `step` (metrics with "loss" and "accuracy")."""
    self._record["evals"].append({"step": step, "epoch": step / self._steps_per_epoch,
                                  "loss": metrics["loss"], "accuracy": metrics["accuracy"]})

  def write(self, step: int) -> None:
    """Brings the record up to `step` and now, and writes it (process 0 only) atomically."""
    record = self._record
    segment = record["segments"][-1]
    segment["end_step"] = step
    segment["wall_seconds"] = time.perf_counter() - self._started
    record["updates"] = step
    record["wall_seconds"] = sum(s["wall_seconds"] for s in record["segments"])
    if record["timed_updates"]:
      record["seconds_per_update"] = record["timed_seconds"] / record["timed_updates"]
    if jax.process_index() != 0:
      return
    temporary = f"{self.path}.tmp"
    with open(temporary, "w") as f:
      json.dump(record, f, indent=2)
    os.replace(temporary, self.path)
