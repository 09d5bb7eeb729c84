"""Orbax checkpoints of the train state, and the run's config saved beside them.

Layout of a workdir:

  workdir/config.json        the run's config (checked when the run is resumed)
  workdir/dataset_info.json  class count and image shape: a checkpoint loads without the data
  workdir/checkpoints/<step>/ orbax checkpoints: the last `keep` ones and the best by eval accuracy

A run resumes from the latest complete checkpoint. Anything that would make it silently start over
or continue from something else -- a checkpoint directory with no complete checkpoint, a checkpoint
that cannot be read, a config that differs from the saved one -- raises `CheckpointError` instead.
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

CONFIG_FILE = "config.json"
DATASET_INFO_FILE = "dataset_info.json"
CHECKPOINT_SUBDIR = "checkpoints"
BEST_METRIC = "accuracy"
TMP_MARKER = ".orbax-checkpoint-tmp"
# Where TensorStore's error messages go on from what failed to the array's full spec (kilobytes).
TENSORSTORE_DETAILS = (" [tensorstore_spec", " See full TensorStore details")

# Config fields that only steer logging and saving; a resumed run may change them.
RUN_CONTROL_KEYS = frozenset(
    {"log_every_steps", "eval_every_epochs", "checkpoint_every_steps", "keep_checkpoints"})


class CheckpointError(ValueError):
  """A checkpoint or workdir that cannot be resumed from or loaded, with the reason and the path."""


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flat(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def _as_json_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def save_or_check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes `workdir/config.json`, or, if it exists, checks that `config` matches it.

  Raises:
    CheckpointError: the saved config differs outside RUN_CONTROL_KEYS (the message lists the keys).
  """
  path = os.path.join(workdir, CONFIG_FILE)
  current = _as_json_dict(config)
  if os.path.exists(path):
    saved = load_config(workdir).to_dict()
    saved_flat, current_flat = _flat(json.loads(json.dumps(saved))), _flat(current)
    differing = sorted(k for k in set(saved_flat) | set(current_flat)
                       if k.split(".")[0] not in RUN_CONTROL_KEYS
                       and saved_flat.get(k) != current_flat.get(k))
    if differing:
      details = ", ".join(f"{k}: saved {saved_flat.get(k)!r} vs now {current_flat.get(k)!r}"
                          for k in differing)
      raise CheckpointError(
          f"{path} was written by a run with a different config ({details}); resume with the "
          "same config or use a new --workdir")
    return
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
      json.dump(current, f, indent=2)


def _read_json(workdir: str, name: str) -> Any:
  path = os.path.join(workdir, name)
  if not os.path.isdir(workdir):
    raise CheckpointError(f"{workdir!r} is not a directory (expected a --workdir of train.py)")
  if not os.path.exists(path):
    raise CheckpointError(f"no {name} in {workdir!r}: not a directory written by train.py")
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path} is not valid JSON ({e})") from e


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config saved in `workdir/config.json`."""
  return ml_collections.ConfigDict(_read_json(workdir, CONFIG_FILE))


def save_dataset_info(num_classes: int, image_shape: tuple[int, ...], workdir: str) -> None:
  """Writes `workdir/dataset_info.json`: what building the model for a checkpoint needs."""
  if jax.process_index() == 0:
    with open(os.path.join(workdir, DATASET_INFO_FILE), "w") as f:
      json.dump({"num_classes": num_classes, "image_shape": list(image_shape)}, f)


def load_dataset_info(workdir: str) -> tuple[int, tuple[int, ...]]:
  """(num_classes, image_shape) saved by `save_dataset_info`."""
  info = _read_json(workdir, DATASET_INFO_FILE)
  return int(info["num_classes"]), tuple(int(d) for d in info["image_shape"])


def _abstract(tree: Any) -> Any:
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
      tree)


def _rank(metrics: dict[str, float]) -> float:
  """A checkpoint's rank for the best slot: its eval accuracy, -inf if saved without evaluation."""
  return metrics.get(BEST_METRIC, -math.inf)


class Checkpointer:
  """Saves the train state every so often and at the end; keeps the last K and the best one.

  The best is the checkpoint with the highest eval accuracy; every checkpoint stores its accuracy
  (none for a save between evaluations) beside the state, so the best is still known on resume.
  """

  def __init__(self, workdir: str, keep: int = 1, read_only: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_SUBDIR))
    if read_only and not os.path.isdir(self.directory):
      raise CheckpointError(f"no checkpoints in {workdir!r} (no {CHECKPOINT_SUBDIR}/ directory)")
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=keep),
        checkpoint_managers.BestN(get_metric_fn=_rank, n=1, keep_checkpoints_without_metrics=False),
    ])
    # best_fn makes orbax write each checkpoint's metrics and rank `best_step` by them.
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, best_fn=_rank,
                                           best_mode="max", read_only=read_only,
                                           create=not read_only)
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    except Exception as e:  # it reads every checkpoint's metrics; name the directory.
      raise CheckpointError(
          f"the checkpoints in {self.directory} cannot be restored: their metrics are unreadable "
          f"({type(e).__name__}: {e}); delete the damaged checkpoint") from e

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The kept checkpoint with the highest eval accuracy (the later one of a tie); the latest if
    none has one."""
    best = self._manager.best_step()
    return self.latest_step() if best is None else best

  def save(self, state: Any, eval_accuracy: float | None = None) -> None:
    """Saves `state` at its step (asynchronously); `eval_accuracy` ranks it for the best slot."""
    step = int(state.step)
    if step in self._manager.all_steps():
      return
    metrics = {} if eval_accuracy is None else {BEST_METRIC: float(eval_accuracy)}
    self._manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)

  def restore(self, state: Any, step: int | None = None) -> Any:
    """Returns `state` with the values of checkpoint `step` (default: the latest).

    `state` gives the structure, shapes, dtypes and shardings. With no checkpoint at all in a
    directory that was never written to, `state` is returned unchanged (a fresh run).

    Raises:
      CheckpointError: the directory holds only incomplete checkpoints, `step` does not exist, or
        the checkpoint cannot be read or does not match `state`.
    """
    if step is None:
      step = self._manager.latest_step()
      if step is None:
        incomplete = [d for d in _listdir(self.directory) if TMP_MARKER in d]
        if incomplete:
          raise CheckpointError(
              f"{self.directory} holds only incomplete checkpoints {incomplete} (a save was "
              "interrupted); delete them to start the run over")
        return state
    return self._restore_step(step, ocp.args.StandardRestore(_abstract(state)))

  def restore_entries(self, entries: dict[str, Any], step: int) -> dict[str, Any]:
    """The top-level entries of checkpoint `step` named by the keys of `entries` (e.g. "params"
    and "batch_stats" of a train state), whose values give their structure, shapes, dtypes and
    shardings. The other entries (optimizer and training-method state) are not read, so the
    caller needs to know nothing of them (orbax partial restore).

    Raises:
      CheckpointError: `step` does not exist, or the entries cannot be read or do not match.
    """
    abstract = _abstract(entries)
    return self._restore_step(step, ocp.args.PyTreeRestore(
        item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True))

  def _restore_step(self, step: int, args: ocp.args.CheckpointArgs) -> Any:
    if step not in self._manager.all_steps():
      raise CheckpointError(
          f"no checkpoint for step {step} in {self.directory}; available: "
          f"{list(self._manager.all_steps())}")
    try:
      restored = self._manager.restore(step, args=args)
    except Exception as e:  # orbax raises many types for unreadable data; name the checkpoint.
      raise self._damaged(step, e) from e
    logging.info("Restored checkpoint of step %d from %s", step, self.directory)
    return restored

  def _damaged(self, step: int, error: Exception) -> CheckpointError:
    """The one-line error for checkpoint `step`, which `error` kept from being restored: what is
    damaged, why (orbax's message up to TensorStore's details), and the other checkpoints."""
    path = os.path.join(self.directory, str(step))
    reason = f"{type(error).__name__}: {str(error).strip()}".splitlines()[0]
    for details in TENSORSTORE_DETAILS:
      reason = reason.split(details)[0]
    others = sorted(s for s in self._manager.all_steps() if s != step)
    if others:
      instead = (f"other checkpoints: step{'s' if len(others) > 1 else ''} "
                 f"{', '.join(map(str, others))} (evaluate one with launch/eval.py --step N, or "
                 f"delete {path} to resume training from the latest)")
    else:
      instead = f"no other checkpoint (delete {path} to start the run over)"
    return CheckpointError(f"checkpoint {path} cannot be restored ({reason}); {instead}")

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _listdir(directory: str) -> list[str]:
  return sorted(os.listdir(directory)) if os.path.isdir(directory) else []
