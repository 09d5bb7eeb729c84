"""Runs an evaluation protocol against a classifier: attacks, worst case, curve, sanity checks.

`evaluate_robustness` takes plain logits functions (images in [0, 1] -> logits, the model as
deployed), so that anything can be evaluated: a `load_classifier` checkpoint, a substitute, or a
test model built to mask gradients. Accuracies are fractions of the evaluated examples.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from odgq_jax import attacks
from odgq_jax.attacks.losses import LogitsFn
from odgq_jax.evaluation import protocol as protocol_lib

Progress = Callable[[str], None]

# Tolerances of the sanity checks (docs/evaluation.md).
MORE_STEPS_TOLERANCE = 0.01
BLACK_BOX_TOLERANCE = 0.02
LARGE_EPS_MAX_ACCURACY = 0.05
ZERO_GRADIENT_WARNING_RATE = 0.01


def pgd_settings_for_eps(eps: float, num_restarts: int = 1) -> attacks.PGDSettings:
  """PGD-20 (`attacks.ATTACKS["pgd20"]`) at radius eps with `num_restarts` random starts; the step
  grows with eps (2.5 eps / 20, at least PGD-20's 2/255) to reach the edge of the ball."""
  pgd20 = attacks.ATTACKS["pgd20"].settings
  return dataclasses.replace(pgd20, eps=eps, num_restarts=num_restarts,
                             step_size=max(pgd20.step_size, 2.5 * eps / pgd20.num_steps))


def _batches(num_examples: int, batch_size: int):
  for start in range(0, num_examples, batch_size):
    yield start, min(start + batch_size, num_examples)


def _pad(array: np.ndarray, size: int) -> np.ndarray:
  """Pads the leading axis to `size` by repeating the first rows (results for them are dropped)."""
  missing = size - array.shape[0]
  return array if missing == 0 else np.concatenate([array, array[:missing]])


class _Runner:
  """Runs per-example scoring functions over the examples in fixed-size batches, with progress."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, key: jax.Array,
               progress: Progress):
    self.images, self.labels = images, labels
    self.batch_size = min(batch_size, len(images))
    self.key = key
    self.progress = progress
    self.seconds: dict[str, float] = {}

  def per_example(self, name: str,
                  score: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
                  among: np.ndarray | None = None) -> np.ndarray:
    """Per-example bool results of `score(images, labels, key)`, computed in batches and timed
    as `seconds[name]`.

    Only the examples where `among` is True are scored (all if None); the others are False.
    """
    indices = np.arange(len(self.images)) if among is None else np.flatnonzero(among)
    jitted = jax.jit(score)
    key = jax.random.fold_in(self.key, zlib.crc32(name.encode()) % (2**31))
    result, start_time = np.zeros(len(self.images), bool), time.perf_counter()
    num_batches = -(-len(indices) // self.batch_size)
    for i, (lo, hi) in enumerate(_batches(len(indices), self.batch_size)):
      batch = indices[lo:hi]
      out = jitted(_pad(self.images[batch], self.batch_size),
                   _pad(self.labels[batch], self.batch_size), jax.random.fold_in(key, i))
      result[batch] = np.asarray(out)[:hi - lo]
      elapsed = time.perf_counter() - start_time
      self.progress(f"[{name}] batch {i + 1}/{num_batches} | {elapsed:.0f} s | ETA "
                    f"{elapsed / (i + 1) * (num_batches - i - 1):.0f} s")
    self.seconds[name] = time.perf_counter() - start_time
    return result


def _is_correct(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.argmax(logits_fn(images), axis=-1) == labels


def _has_zero_input_gradient(logits_fn: LogitsFn, images: jax.Array,
                             labels: jax.Array) -> jax.Array:
  """Per example: is the input gradient of the cross-entropy exactly zero everywhere?"""
  grads = jax.grad(lambda x: jnp.sum(attacks.cross_entropy(logits_fn(x), labels)))(images)
  return jnp.all(grads.reshape(grads.shape[0], -1) == 0, axis=1)


def _check(passed: bool, detail: str) -> dict:
  return {"passed": bool(passed), "detail": detail}


def sanity_checks(accuracy: Mapping[str, float | None], large_eps_accuracy: float,
                  zero_rate: float) -> dict[str, dict]:
  """The checks of docs/evaluation.md that must pass before a number is reported."""
  checks = {
      "iterative_beats_single_step": _check(
          accuracy["pgd20"] <= accuracy["fgsm"],
          f"PGD-20 {accuracy['pgd20']:.4f} <= FGSM {accuracy['fgsm']:.4f}"),
      "more_steps_do_not_help": _check(
          accuracy["pgd100"] <= accuracy["pgd20"] + MORE_STEPS_TOLERANCE,
          f"PGD-100 {accuracy['pgd100']:.4f} <= PGD-20 {accuracy['pgd20']:.4f} + "
          f"{MORE_STEPS_TOLERANCE}"),
      "large_eps_breaks_everything": _check(
          large_eps_accuracy < LARGE_EPS_MAX_ACCURACY,
          f"accuracy at eps 64/255 {large_eps_accuracy:.4f} < {LARGE_EPS_MAX_ACCURACY}"),
      "zero_gradients": _check(
          zero_rate <= ZERO_GRADIENT_WARNING_RATE,
          f"{zero_rate:.2%} of the examples have an all-zero input gradient (warning above "
          f"{ZERO_GRADIENT_WARNING_RATE:.0%})"),
  }
  white = {k: accuracy[k] for k in protocol_lib.WHITE_BOX + protocol_lib.BINARY_EXTRA
           if accuracy.get(k) is not None}
  black = {k: accuracy[k] for k in protocol_lib.BLACK_BOX if accuracy.get(k) is not None}
  best_white_name = min(white, key=white.get)
  best_black_name = min(black, key=black.get)
  checks["black_box_weaker_than_white_box"] = _check(
      black[best_black_name] >= white[best_white_name] - BLACK_BOX_TOLERANCE,
      f"best black-box {best_black_name} {black[best_black_name]:.4f} >= best white-box "
      f"{best_white_name} {white[best_white_name]:.4f} - {BLACK_BOX_TOLERANCE}; if not, the "
      "white-box numbers are not trusted (gradient masking)")
  return checks


def evaluate_robustness(logits_fn: LogitsFn, images: np.ndarray, labels: np.ndarray, *,
                        protocol: protocol_lib.Protocol, eps: float,
                        substitutes: Mapping[str, LogitsFn], key: jax.Array,
                        batch_size: int = 250, binary: bool = False,
                        attack_subset: Sequence[str] | None = None,
                        progress: Progress = logging.info) -> dict:
  """Runs `protocol` against `logits_fn` on (images, labels) and returns the report dict.

  Args:
    logits_fn: the target, as deployed (eval mode, quantized forward pass).
    images: float32 [N, H, W, C] in [0, 1]; labels: int32 [N].
    protocol: the budgets (`PROTOCOLS["quick"]` or `["full"]`).
    eps: the threat model's L-inf radius.
    substitutes: substitute models by name ("fp", "arch", "low_bit"); a transfer attack whose
      substitute is missing is skipped and reported as such.
    key: PRNG key of all attacks.
    batch_size: examples per attack batch.
    binary: also run PGD++ (for binary networks).
    attack_subset: run only these attacks (names from `protocol_lib.ATTACK_NAMES`); None runs the
      whole protocol. A subset gives a partial report for cheap comparisons (say PGD-20 on
      held-out images): the attacks left out are reported as skipped, and there is no
      robust-vs-eps curve, no zero-gradient rate and no sanity check, so the verdict is
      "unchecked" and the numbers are not a robustness claim.
    progress: called with a progress line after every batch.

  An example misclassified without attack counts as not robust under every attack and is not
  attacked (as in AutoAttack): robust accuracy is the fraction of examples classified correctly
  both clean and under the attack.

  Returns:
    The report (its schema: docs/evaluation.md, "The report"): protocol, num_examples, eps, clean,
    attacks, skipped, worst_case, sanity, verdict, zero_gradient_rate, robust_vs_eps, seconds.

  Raises:
    ValueError: `attack_subset` names an unknown attack or is empty.
  """
  complete = attack_subset is None
  if not complete:
    protocol_lib.check_attack_subset(attack_subset)
  requested = lambda name: complete or name in attack_subset
  skipped = {name: "not requested (attack subset)" for name in protocol_lib.ATTACK_NAMES
             if not requested(name) and (name != "pgdpp" or binary)}
  runner = _Runner(images, labels, batch_size, key, progress)
  correct = {"clean": runner.per_example("clean", lambda x, y, k: _is_correct(logits_fn, x, y))}
  clean = correct["clean"]

  def white_box(name, settings):
    attack = attacks.ATTACKS[name].attack
    return lambda x, y, k: _is_correct(logits_fn, attack(logits_fn, x, y, k, settings), y)

  registry = attacks.ATTACKS
  white_settings = {
      "fgsm": dataclasses.replace(registry["fgsm"].settings, eps=eps),
      "pgd20": pgd_settings_for_eps(eps, protocol.pgd_restarts),
      "mim": dataclasses.replace(registry["mim"].settings, eps=eps),
      "cw_inf": dataclasses.replace(registry["cw_inf"].settings, eps=eps),
      "apgd_ce": dataclasses.replace(registry["apgd_ce"].settings, eps=eps),
      "pgd100": dataclasses.replace(registry["pgd100"].settings, eps=eps),
  }
  if binary or not complete:
    white_settings["pgdpp"] = dataclasses.replace(registry["pgdpp"].settings, eps=eps)
  for name, settings in white_settings.items():
    if requested(name):
      correct[name] = runner.per_example(name, white_box(name, settings), among=clean)

  for name, (substitute_name, crafting_name) in protocol_lib.TRANSFER_SUBSTITUTES.items():
    if not requested(name):
      continue
    if substitute_name not in substitutes:
      skipped[name] = f"no substitute {substitute_name!r} (--substitute {substitute_name}=DIR)"
      continue
    # The final iterate transfers better than the first point that fools the substitute.
    crafting = (dataclasses.replace(white_settings["pgd20"], track_every_step=False)
                if crafting_name == "pgd20"
                else dataclasses.replace(registry[crafting_name].settings, eps=eps))
    settings = attacks.TransferSettings(eps=eps, crafting=crafting)
    substitute = substitutes[substitute_name]
    correct[name] = runner.per_example(
        name, lambda x, y, k, substitute=substitute, settings=settings: _is_correct(
            logits_fn, attacks.transfer_attack(substitute, x, y, k, settings), y), among=clean)
  if requested("square"):
    square_settings = dataclasses.replace(registry["square"].settings, eps=eps,
                                          num_queries=protocol.square_queries)
    correct["square"] = runner.per_example("square", lambda x, y, k: _is_correct(
        logits_fn, attacks.square(logits_fn, x, y, k, square_settings), y), among=clean)

  accuracy = {name: float(c.mean()) for name, c in correct.items()}
  attack_names = [n for n in correct if n != "clean"]
  worst_case = np.logical_and.reduce([correct[n] for n in ["clean", *attack_names]])
  report = {
      "protocol": protocol.name,
      "num_examples": int(len(images)),
      "eps": eps,
      "clean": accuracy["clean"],
      "attacks": {name: accuracy[name] for name in attack_names} | {n: None for n in skipped},
      "skipped": skipped,
      "worst_case": float(worst_case.mean()),
      "sanity": {},
      "verdict": "unchecked",
      "zero_gradient_rate": None,
      "robust_vs_eps": None,
      "seconds": runner.seconds,
  }
  if not complete:
    return report

  curve = {}
  for curve_eps in sorted(set(protocol.curve_eps) | {eps, protocol.sanity_eps}):
    if curve_eps == eps:
      curve[curve_eps] = float(correct["pgd20"].mean())
      continue
    settings = pgd_settings_for_eps(curve_eps)
    curve[curve_eps] = float(runner.per_example(
        f"pgd20@{curve_eps * 255:.0f}/255",
        lambda x, y, k, settings=settings: _is_correct(
            logits_fn, attacks.pgd(logits_fn, x, y, k, settings), y), among=clean).mean())

  zero_rate = float(runner.per_example(
      "zero_gradients", lambda x, y, k: _has_zero_input_gradient(logits_fn, x, y)).mean())
  sanity = sanity_checks(accuracy, curve[protocol.sanity_eps], zero_rate)
  return report | {
      "sanity": sanity,
      "verdict": "passed" if all(c["passed"] for c in sanity.values()) else "masked",
      "zero_gradient_rate": zero_rate,
      "robust_vs_eps": {"eps": list(curve), "accuracy": list(curve.values())},
  }
