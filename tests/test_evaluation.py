"""The evaluation protocol's runner, sanity checks and report, on small synthetic models."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from odgq_jax import evaluation
from odgq_jax.evaluation import protocol as protocol_lib
from odgq_jax.evaluation import robustness
from tests.test_attacks import trained  # pylint: disable=unused-import  (module fixture)

EPS = 8 / 255
# A small budget: the runner's logic, not the attacks' strength, is under test here.
TEST_PROTOCOL = evaluation.Protocol("test", num_examples=None, square_queries=200, pgd_restarts=1,
                                    curve_eps=(4 / 255, 16 / 255))
NUM_EXAMPLES = 100


def run(logits_fn, trained, substitutes):
  return evaluation.evaluate_robustness(
      logits_fn, np.asarray(trained.images[:NUM_EXAMPLES]),
      np.asarray(trained.labels[:NUM_EXAMPLES]), protocol=TEST_PROTOCOL, eps=EPS,
      substitutes=substitutes, key=jax.random.PRNGKey(0), batch_size=50, progress=lambda _: None)


@pytest.fixture(scope="module")
def honest_report(trained):
  return run(trained.logits_fn, trained, {"fp": trained.substitute_logits_fn})


def test_report_schema(honest_report):
  report = honest_report
  assert set(report) >= {"protocol", "num_examples", "eps", "clean", "attacks", "worst_case",
                         "sanity", "zero_gradient_rate", "seconds"}
  assert report["protocol"] == "test" and report["num_examples"] == NUM_EXAMPLES
  assert report["eps"] == pytest.approx(EPS)
  for name in protocol_lib.WHITE_BOX + ("transfer_fp", "transfer_di_mi", "square"):
    assert 0.0 <= report["attacks"][name] <= 1.0, name
    assert report["seconds"][name] > 0
  # Missing substitutes are reported, not silently dropped.
  assert report["attacks"]["transfer_arch"] is None and "transfer_arch" in report["skipped"]
  for check in report["sanity"].values():
    assert isinstance(check["passed"], bool) and check["detail"]
  json.dumps(report)  # serialisable as is


def test_worst_case_counts_the_examples_that_survive_every_attack(monkeypatch):
  # Constructed per-example outcomes (is the example classified correctly?) in place of running
  # the attacks: each attack fools a different example, so every attack leaves half or more of
  # the examples robust while only one example survives them all.
  outcomes = {
      "clean": [True, True, True, False],
      "fgsm": [False, True, True, False],
      "mim": [True, False, True, False],
      "pgd20": [True, True, True, False],
  }
  monkeypatch.setattr(robustness._Runner, "per_example",  # pylint: disable=protected-access
                      lambda self, name, score, among=None: np.array(outcomes[name]))
  report = evaluation.evaluate_robustness(
      lambda x: x, np.zeros((4, 2, 2, 1), np.float32), np.zeros(4, np.int32),
      protocol=TEST_PROTOCOL, eps=EPS, substitutes={}, key=jax.random.PRNGKey(0),
      attack_subset=["fgsm", "mim", "pgd20"], progress=lambda _: None)
  assert report["clean"] == 0.75
  assert {name: report["attacks"][name] for name in ("fgsm", "mim", "pgd20")} == {
      "fgsm": 0.5, "mim": 0.5, "pgd20": 0.75}
  assert report["worst_case"] == 0.25  # not min over attacks (0.5)


def test_robust_accuracy_counts_only_examples_correct_without_attack(honest_report):
  for name, accuracy in honest_report["attacks"].items():
    assert accuracy is None or accuracy <= honest_report["clean"], name
  assert max(honest_report["robust_vs_eps"]["accuracy"]) <= honest_report["clean"]


def test_an_honest_model_passes_the_sanity_checks(honest_report):
  failed = {k: c["detail"] for k, c in honest_report["sanity"].items() if not c["passed"]}
  assert not failed
  assert honest_report["verdict"] == "passed"
  assert honest_report["zero_gradient_rate"] == 0.0


def test_a_gradient_masking_model_is_reported_as_masked(trained):
  # Rounds its input to 8 levels with no straight-through estimator: every input gradient is zero,
  # so gradient attacks stall, while the gradient-free Square attack does not.
  masked_logits_fn = lambda x: trained.logits_fn(jnp.round(x * 7) / 7)
  report = run(masked_logits_fn, trained, {})
  assert report["verdict"] == "masked"
  assert report["zero_gradient_rate"] == 1.0
  assert not report["sanity"]["zero_gradients"]["passed"]
  assert not report["sanity"]["black_box_weaker_than_white_box"]["passed"]


def test_report_files(honest_report, tmp_path):
  paths = evaluation.write_report(honest_report, str(tmp_path / "report.json"), "test model")
  assert json.loads((tmp_path / "report.json").read_text())["clean"] == honest_report["clean"]
  markdown = (tmp_path / "report.md").read_text()
  assert "worst case" in markdown and "pgd20" in markdown and "transfer_arch" in markdown
  assert (tmp_path / "robust_vs_eps.png").stat().st_size > 1000
  assert set(paths) == {"json", "markdown", "plot"}


def test_an_attack_subset_gives_a_partial_unchecked_report(trained, tmp_path):
  report = evaluation.evaluate_robustness(
      trained.logits_fn, np.asarray(trained.images[:NUM_EXAMPLES]),
      np.asarray(trained.labels[:NUM_EXAMPLES]), protocol=TEST_PROTOCOL, eps=EPS,
      substitutes={}, key=jax.random.PRNGKey(0), batch_size=50, attack_subset=["pgd20"],
      progress=lambda _: None)
  assert 0.0 <= report["attacks"]["pgd20"] <= report["clean"]
  assert report["worst_case"] == pytest.approx(report["attacks"]["pgd20"])
  for name in protocol_lib.WHITE_BOX + protocol_lib.BLACK_BOX:
    if name != "pgd20":
      assert report["attacks"][name] is None and "not requested" in report["skipped"][name]
  assert set(report["seconds"]) == {"clean", "pgd20"}  # nothing else ran
  # Without the other attacks there are no sanity checks, so no verdict of "passed".
  assert report["verdict"] == "unchecked" and report["sanity"] == {}
  assert report["robust_vs_eps"] is None and report["zero_gradient_rate"] is None
  paths = evaluation.write_report(report, str(tmp_path / "report.json"), "subset")
  assert set(paths) == {"json", "markdown"}
  assert "not a robustness claim" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("subset", [[], ["pgd21"]])
def test_an_unknown_or_empty_attack_subset_is_an_error(trained, subset):
  with pytest.raises(ValueError, match="attacks must be names from"):
    evaluation.evaluate_robustness(
        trained.logits_fn, np.asarray(trained.images[:4]), np.asarray(trained.labels[:4]),
        protocol=TEST_PROTOCOL, eps=EPS, substitutes={}, key=jax.random.PRNGKey(0),
        attack_subset=subset, progress=lambda _: None)
