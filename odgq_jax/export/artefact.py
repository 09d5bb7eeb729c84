"""The export directory: the serialized forward pass, the integer weights and metadata.json.

  OUT/forward.jax_exported  the eval-mode forward pass, float32 images [N, H, W, C] in [0, 1] ->
                            float32 logits [N, num_classes] with N symbolic, serialized by
                            `jax.export` for PLATFORMS with its first-order VJP (gradients for
                            attacks); the integer weights are constants inside it
  OUT/weights/              orbax checkpoint of the deployment variables (`integer_model.py`)
  OUT/metadata.json         what the model is (architecture, bit-widths, normalisation, method and
                            eps, dataset, evaluation) and the size and SHA-256 of every file above

Running it takes jax and numpy alone:

  exported = jax.export.deserialize(open("OUT/forward.jax_exported", "rb").read())
  logits = exported.call(images)

`read_export` and `read_weights` check every file against metadata.json before reading it, so that
an incomplete, truncated or modified export is refused with an `ExportError` naming the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

FORWARD_FILE = "forward.jax_exported"
WEIGHTS_DIR = "weights"
METADATA_FILE = "metadata.json"
FORMAT = "odgq-jax export"
FORMAT_VERSION = 1
PLATFORMS = ("cpu", "cuda", "tpu")
VJP_ORDER = 1


class ExportError(ValueError):
  """An export directory that is incomplete, damaged or not an export, naming the file."""


def is_export(directory: str) -> bool:
  """Whether `directory` holds an export (or what is left of one): metadata.json or the forward
  pass."""
  return any(os.path.exists(os.path.join(directory, name))
             for name in (METADATA_FILE, FORWARD_FILE))


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _file_records(directory: str) -> dict[str, dict[str, Any]]:
  """{relative path: {"bytes", "sha256"}} of the forward pass and of every file of weights/."""
  paths = [FORWARD_FILE]
  for root, _, files in os.walk(os.path.join(directory, WEIGHTS_DIR)):
    paths += [os.path.relpath(os.path.join(root, name), directory) for name in files]
  return {path.replace(os.sep, "/"): {"bytes": os.path.getsize(os.path.join(directory, path)),
                                      "sha256": _sha256(os.path.join(directory, path))}
          for path in sorted(paths)}


def write_export(directory: str, forward: bytes, weights: dict[str, Any],
                 metadata: dict[str, Any]) -> dict[str, Any]:
  """Writes an export to `directory` and returns its metadata, with `format`, `format_version`
  and `files` (the size and SHA-256 of every file) added.

  The export is written beside `directory` and moved into place when complete; an export already
  there is replaced.

  Raises:
    ExportError: `directory` exists and is neither empty nor an export.
  """
  directory = os.path.abspath(directory)
  if os.path.isdir(directory) and os.listdir(directory) and not is_export(directory):
    raise ExportError(f"{directory} exists and is not an export; choose a new output directory")
  partial = directory + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  with open(os.path.join(partial, FORWARD_FILE), "wb") as f:
    f.write(forward)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(partial, WEIGHTS_DIR), weights)
  metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata,
              "files": _file_records(partial)}
  with open(os.path.join(partial, METADATA_FILE), "w") as f:
    json.dump(metadata, f, indent=2)
  shutil.rmtree(directory, ignore_errors=True)
  os.replace(partial, directory)
  return metadata


def read_metadata(directory: str) -> dict[str, Any]:
  """metadata.json of the export in `directory`, after checking every file it records.

  Raises:
    ExportError: no export in `directory`, metadata.json unreadable or of another format, or a
      recorded file missing or of another size or SHA-256 than recorded.
  """
  path = os.path.join(directory, METADATA_FILE)
  if not os.path.isfile(path):
    raise ExportError(f"{directory} is not a complete export: it has no {METADATA_FILE}")
  try:
    with open(path) as f:
      metadata = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ExportError(f"{path} is damaged: not valid JSON ({e})") from e
  if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
    raise ExportError(f"{path} is not the metadata of an odgq-jax export")
  if metadata.get("format_version", 0) > FORMAT_VERSION:
    raise ExportError(f"{directory} is an export of format version {metadata['format_version']}; "
                      f"this version of odgq-jax reads up to {FORMAT_VERSION}")
  for name, record in metadata.get("files", {}).items():
    file_path = os.path.join(directory, name)
    if not os.path.isfile(file_path):
      raise ExportError(f"export {directory} is incomplete: {name} is missing")
    size = os.path.getsize(file_path)
    if size != record["bytes"]:
      raise ExportError(f"export {directory} is damaged: {name} has {size} bytes, "
                        f"{METADATA_FILE} records {record['bytes']} (truncated?)")
    if _sha256(file_path) != record["sha256"]:
      raise ExportError(f"export {directory} is damaged: the SHA-256 of {name} differs from the "
                        f"one {METADATA_FILE} records (modified or corrupted)")
  if FORWARD_FILE not in metadata.get("files", {}):
    raise ExportError(f"{path} records no {FORWARD_FILE}")
  return metadata


def read_export(directory: str) -> tuple[dict[str, Any], jax.export.Exported]:
  """(metadata, the deserialized forward pass) of the export in `directory`, checked first.

  Raises:
    ExportError: see `read_metadata`; or the forward pass cannot be deserialized.
  """
  metadata = read_metadata(directory)
  path = os.path.join(directory, FORWARD_FILE)
  with open(path, "rb") as f:
    serialized = f.read()
  try:
    exported = jax.export.deserialize(bytearray(serialized))
  except Exception as e:  # flatbuffer and StableHLO readers raise many types; name the file.
    raise ExportError(f"{path} cannot be deserialized: {type(e).__name__}: {e}") from e
  return metadata, exported


def read_weights(directory: str) -> dict[str, Any]:
  """The deployment variables (numpy arrays) of the export in `directory`, checked first.

  Raises:
    ExportError: see `read_metadata`; or the orbax checkpoint cannot be restored.
  """
  read_metadata(directory)
  path = os.path.abspath(os.path.join(directory, WEIGHTS_DIR))
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      weights = checkpointer.restore(path)
  except Exception as e:  # orbax raises many types for unreadable data; name the checkpoint.
    raise ExportError(f"{path} cannot be restored: {type(e).__name__}: {e}") from e
  return jax.tree.map(np.asarray, weights)
