"""Exports a trained classifier for deployment: `export_checkpoint(workdir, out)`.

The forward pass that reads only the integer weights (`integer_model.py`) is serialized with
`jax.export` for the cpu, cuda and tpu platforms, with a symbolic batch dimension and its
first-order VJP; the weights go to an orbax checkpoint beside it and the description of the model
to metadata.json (`artefact.py`).
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp

from odgq_jax import classifier as classifier_lib
from odgq_jax import quant
from odgq_jax.export import artefact
from odgq_jax.export import integer_model

FULL_PRECISION_BITS = 32  # the bit-width metadata.json gives a float32 ("none") quantizer


def _bits(quantizer: quant.Quantizer) -> int:
  return FULL_PRECISION_BITS if isinstance(quantizer, quant.Identity) else quantizer.bits


def exported_forward(classifier: classifier_lib.Classifier,
                     deployment: dict[str, Any]) -> jax.export.Exported:
  """The deployed forward pass of `classifier` on `deployment` variables, exported for
  `artefact.PLATFORMS` with a symbolic batch dimension."""
  batch, = jax.export.symbolic_shape("batch")
  forward = integer_model.deployed_logits_fn(classifier.model, deployment)
  return jax.export.export(jax.jit(forward), platforms=artefact.PLATFORMS)(
      jax.ShapeDtypeStruct((batch, *classifier.image_shape), jnp.float32))


def _evaluation(report: dict[str, Any], report_path: str | None, step: int) -> dict[str, Any]:
  """The accuracies of an evaluation report (`launch/eval.py`) of the exported step."""
  evaluated = report.get("checkpoint", {}).get("step")
  if evaluated != step:
    raise ValueError(f"the report {report_path} evaluates step {evaluated}, the export is of "
                     f"step {step}")
  return {"report": report_path, "checkpoint": report["checkpoint"],
          **{key: report.get(key) for key in ("protocol", "split", "num_examples", "eps", "verdict",
                                              "clean", "worst_case", "attacks")}}


def export_metadata(classifier: classifier_lib.Classifier, checkpoint_dir: str | None,
                    evaluation: dict[str, Any] | None) -> dict[str, Any]:
  """What metadata.json says of the model (artefact.py adds the files)."""
  model, config = classifier.model, classifier.config
  return {
      "architecture": config.model.name,
      "num_classes": classifier.num_classes,
      "image_shape": list(classifier.image_shape),
      "input": "float32 images [N, H, W, C] with values in [0, 1] (N: any batch size)",
      "bit_widths": {
          "weights": _bits(model.weight_quantizer),
          "activations": _bits(model.act_quantizer),
          "first_last_weights": _bits(model.first_last_weight_quantizer),
          "first_last_activations": _bits(model.first_last_act_quantizer),
      },
      "switchable_bits": list(model.switchable_bits),
      "normalisation": {"mean": list(model.input_mean), "std": list(model.input_std),
                        "applied": "inside the forward pass: (image - mean) / std per channel"},
      "batch_norm_folded_into_convs": integer_model.is_full_precision(model),
      "method": config.method.name,
      "eps": config.method.get("eps"),
      "dataset": config.dataset,
      "train_split": config.train_split,
      "checkpoint": {"directory": checkpoint_dir and os.path.abspath(checkpoint_dir),
                     "step": classifier.step},
      "evaluation": evaluation,
      "platforms": list(artefact.PLATFORMS),
      "vjp_order": artefact.VJP_ORDER,
      "jax_version": jax.__version__,
      "config": json.loads(config.to_json_best_effort()),
  }


def export_classifier(classifier: classifier_lib.Classifier, output_dir: str, *,
                      checkpoint_dir: str | None = None, report: dict[str, Any] | None = None,
                      report_path: str | None = None) -> dict[str, Any]:
  """Exports `classifier` (loaded from `checkpoint_dir`, if from a checkpoint) to `output_dir`,
  with the accuracies of its evaluation `report` (read from `report_path`) if given; returns the
  metadata written.

  Raises:
    ValueError: the report evaluates another step; `output_dir` is not empty and not an export.
  """
  if classifier.exported is not None:
    raise ValueError("the classifier is an export already; export its training checkpoint")
  deployment = integer_model.deployment_variables(classifier.model, classifier.variables,
                                                  classifier.image_shape)
  serialized = exported_forward(classifier, deployment).serialize(vjp_order=artefact.VJP_ORDER)
  evaluation = None if report is None else _evaluation(report, report_path, classifier.step)
  return artefact.write_export(output_dir, serialized, deployment,
                               export_metadata(classifier, checkpoint_dir, evaluation))


def export_checkpoint(checkpoint_dir: str, output_dir: str, report_path: str | None = None,
                      step: int | str = "latest") -> dict[str, Any]:
  """Exports checkpoint `step` of the run in `checkpoint_dir` to `output_dir` (see
  `export_classifier`), with the accuracies of the report.json at `report_path` if given."""
  report = None
  if report_path is not None:
    with open(report_path) as f:
      report = json.load(f)
  return export_classifier(classifier_lib.load_classifier(checkpoint_dir, step), output_dir,
                           checkpoint_dir=checkpoint_dir, report=report, report_path=report_path)
