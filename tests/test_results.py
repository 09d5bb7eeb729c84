"""docs/results.md, its plot and README.md's headline table are what benchmarks/results.py renders
from results/; a run folder dropped into results/ shows up in them."""
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from configs import cifar10_resnet20_w4a4_fgsm_rs
from odgq_jax import run_record

REPO = Path(__file__).resolve().parents[1]
# benchmarks/ is not a package: load benchmarks/results.py by path (registered first, as its
# dataclass needs its module).
_spec = importlib.util.spec_from_file_location("benchmarks_results",
                                               REPO / "benchmarks" / "results.py")
results = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(results)

NEW_RUN = "cifar10_resnet20_w4a4_fgsm_rs_seed7"
NEW_RUN_TRAIN = ("python launch/train.py --config configs/cifar10_resnet20_w4a4_fgsm_rs.py "
                 f"--workdir runs/{NEW_RUN} --config.seed=7")
# ml_collections loads config files with the deprecated importlib load_module().
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


def test_committed_results_markdown_matches_results_folder():
  assert results.RESULTS_MARKDOWN.read_text() == results.render_results(), (
      "docs/results.md is out of date with results/: run python benchmarks/results.py")


def test_committed_readme_headline_matches_results_folder():
  readme = results.README.read_text()
  assert results.replace_headline(readme, results.render_headline()) == readme, (
      "README.md's headline table is out of date with results/: run python benchmarks/results.py")


def test_committed_plot_shows_every_evaluated_run_at_its_cost():
  runs = results.load_runs(results.RESULTS_DIR)
  points = results.plot_points(runs, results.load_step_cost(results.RESULTS_DIR))
  assert {p["run"] for p in points} >= {"cifar10_resnet20_w4a4_odgq_replays", "cifar10_resnet20_w4a4_r1"}
  assert results.read_plot_points(results.PLOT) == points, (
      "docs/results_worst_case_vs_cost.png is out of date: run python benchmarks/results.py")


def test_train_commands_give_the_configs_the_runs_trained_with():
  runs = {run.name: run for run in results.load_runs(results.RESULTS_DIR)}
  natural = runs["cifar10_resnet20_w4a4_r1"].config
  assert natural.method.name == "natural" and natural.learning_rate == 0.2
  assert runs["cifar10_resnet20_w4a4_odgq_uniform"].config.method.selection == "uniform"
  assert runs["cifar10_resnet20_w4a4_odgq_replays"].config.method.selection == "loss_weighted"
  assert results.model_label(natural) == "resnet20 W4A4"


def add_run(results_dir, name):
  """A new run folder with an evaluation report and a run record written by run_record."""
  folder = results_dir / name
  folder.mkdir()
  report = json.loads((results_dir / "cifar10_resnet20_w4a4_fgsm_rs" / "report.json").read_text())
  report.update(clean=0.777, worst_case=0.123)
  report["attacks"]["pgd20"] = 0.321
  (folder / "report.json").write_text(json.dumps(report))
  config = cifar10_resnet20_w4a4_fgsm_rs.get_config()
  config.seed = 7  # as NEW_RUN_TRAIN says
  record = run_record.RunRecord(str(folder), config, 0, 390, started=time.perf_counter() - 3725)
  record.add_eval(390, {"loss": 1.5, "accuracy": 0.5})
  record.add_eval(780, {"loss": 1.2, "accuracy": 0.6123})
  record.add_timing(100.0, 200)
  record.write(780)
  (folder / "commands.json").write_text(json.dumps({"train": NEW_RUN_TRAIN}))


def test_a_run_dropped_into_results_appears_in_every_table_and_the_plot(tmp_path):
  results_dir = tmp_path / "results"
  shutil.copytree(results.RESULTS_DIR, results_dir)
  add_run(results_dir, NEW_RUN)
  markdown = results.render_results(results_dir)
  row = next(line for line in markdown.splitlines() if line.startswith(f"| [{NEW_RUN}]"))
  assert "| fgsm_rs |" in row and "| 77.7 |" in row and "| 32.1 |" in row
  fgsm_rs_cost = results.load_step_cost(results_dir)["methods"]["fgsm_rs"]
  ratios = f"| {fgsm_rs_cost['flops_ratio']:.2f} | {fgsm_rs_cost['wall_ratio']:.2f} |"
  assert "**12.3**" in row and ratios in row  # FLOPs and wall ratio of fgsm_rs
  training = next(line for line in markdown.splitlines() if line.startswith(f"| {NEW_RUN} |"))
  assert "| 50.0 61.2 | **61.23** | 780 | 1 h 02 min | 0.50 |" in training
  assert f"- {NEW_RUN}: train `{NEW_RUN_TRAIN}`" in markdown
  seeds = next(line for line in markdown.splitlines() if NEW_RUN in line and "| 0, 1, 7 |" in line)
  assert seeds.startswith("| `python launch/train.py --config configs/cifar10_resnet20_w4a4_fgsm_rs.py` |")
  # Seeds 0 and 1 of the committed FGSM-RS runs beside the new run's 77.7 clean / 32.1 PGD-20.
  committed = [json.loads((results_dir / name / "report.json").read_text()) for name in
               ("cifar10_resnet20_w4a4_fgsm_rs", "cifar10_resnet20_w4a4_fgsm_rs_seed1")]
  clean = [100 * r["clean"] for r in committed] + [77.7]
  pgd20 = [100 * r["attacks"]["pgd20"] for r in committed] + [32.1]
  for values in (clean, pgd20):
    assert f"| {sum(values) / 3:.1f} ({min(values):.1f}–{max(values):.1f}) |" in seeds
  headline = results.render_headline(results_dir)
  assert f"[{NEW_RUN}](results/{NEW_RUN}/)" in headline and "**12.3**" in headline
  points = results.plot_points(results.load_runs(results_dir), results.load_step_cost(results_dir))
  assert {"run": NEW_RUN, "group": "resnet20 W4A4 on cifar10_jpeg",
          "wall_ratio": round(fgsm_rs_cost["wall_ratio"], 4), "worst_case": 12.3} in points
  plot = tmp_path / "plot.png"
  results.write_plot(points, plot)
  assert results.read_plot_points(plot) == points


def test_held_out_runs_that_differ_only_in_seed_get_a_mean_and_range_of_their_pgd20(tmp_path):
  results_dir = tmp_path / "results"
  shutil.copytree(results.RESULTS_DIR, results_dir)
  committed = results_dir / "heldout_fgsm_rs"
  folder = results_dir / "heldout_fgsm_rs_seed3"
  folder.mkdir()
  report = json.loads((committed / "report.json").read_text())
  seed0_clean, seed0_pgd20 = 100 * report["clean"], 100 * report["attacks"]["pgd20"]
  report.update(clean=0.601)
  report["attacks"]["pgd20"] = 0.300
  (folder / "report.json").write_text(json.dumps(report))
  train = json.loads((committed / "commands.json").read_text())["train"]
  (folder / "commands.json").write_text(json.dumps(
      {"train": train.replace("runs/heldout_fgsm_rs", "runs/x") + " --config.seed=3"}))
  markdown = results.render_results(results_dir)
  subsets = markdown.split("### Seeds of attack subsets")[1]
  row = next(line for line in subsets.splitlines() if "| 0, 3 |" in line)
  assert "| heldout_fgsm_rs, heldout_fgsm_rs_seed3 |" in row
  assert "first 1,000 of train[45000:]" in row
  for seed0, seed3 in ((seed0_clean, 60.1), (seed0_pgd20, 30.0)):
    low, high = sorted((seed0, seed3))
    assert f"| {(seed0 + seed3) / 2:.1f} ({low:.1f}–{high:.1f}) |" in row


def test_a_run_folder_without_a_config_source_is_an_error(tmp_path):
  folder = tmp_path / "results" / "unknown_run"
  folder.mkdir(parents=True)
  shutil.copy(results.RESULTS_DIR / "cifar10_resnet20_w4a4_odgq_replays" / "report.json", folder)
  with pytest.raises(ValueError, match="unknown_run has no run.json and no commands.json"):
    results.render_results(tmp_path / "results")


def test_a_readme_without_the_markers_is_an_error():
  with pytest.raises(ValueError, match="README.md needs the lines"):
    results.replace_headline("# odgq-jax\n", "| table |\n")


@pytest.mark.parametrize("command,name", [
    ("python launch/train.py --config configs/cifar10_resnet20_w4a4.py --workdir w", "natural"),
    ("python launch/train.py --config configs/cifar10_resnet20_w4a4_odgq_fresh.py --workdir w "
     "--config.seed=1", "odgq_fresh"),
    ("python launch/train.py --config=configs/cifar10_resnet20_w4a4_fgsm_rs.py", "fgsm_rs"),
    ("python launch/train.py --config configs/cifar10_resnet20_binary_odgq.py", None),
    (None, None)])
def test_a_run_is_costed_by_the_step_cost_entry_of_its_own_config(command, name):
  assert results.step_cost_name(command) == name


def test_a_run_that_only_trains_longer_is_costed_by_the_step_cost_entry_it_names():
  step_cost = results.load_step_cost(results.RESULTS_DIR)
  train = "python launch/train.py --config configs/cifar10_resnet20_w4a4_odgq_equal_time.py"
  run = results.Run("equal_time", results.config_from_train_command(train), {}, None,
                    {"train": train, "step_cost": "odgq"})
  assert results.training_cost(run, step_cost) == step_cost["methods"]["odgq"]
  run.commands.pop("step_cost")
  assert results.training_cost(run, step_cost) is None  # not measured under its own name


def test_committed_experiments_comparison_tables_match_results_folder():
  text = results.EXPERIMENTS.read_text()
  assert results.COMPARISON.search(text), "docs/experiments.md has no comparison table"
  assert results.replace_comparisons(text, results.load_runs(results.RESULTS_DIR)) == text, (
      "a comparison table of docs/experiments.md is out of date with results/: run python "
      "benchmarks/results.py")


def test_a_comparison_table_shows_the_named_runs_in_order_from_their_reports(tmp_path):
  results_dir = tmp_path / "results"
  shutil.copytree(results.RESULTS_DIR, results_dir)
  add_run(results_dir, NEW_RUN)
  runs = results.load_runs(results_dir)
  text = (f"Before.\n<!-- comparison of results/: {NEW_RUN} heldout_fgsm_rs -->\nstale\n"
          "<!-- end of comparison -->\nAfter.\n")
  rendered = results.replace_comparisons(text, runs).splitlines()
  assert rendered[0] == "Before." and rendered[-1] == "After."
  # The new run's full report brings every attack and the worst case; the PGD-20-only report
  # leaves those cells empty.
  assert rendered[2].startswith("| run | what | evaluated on | clean | fgsm | pgd20 |")
  assert rendered[2].endswith("| worst case |")
  assert rendered[4].startswith(f"| [{NEW_RUN}](../results/{NEW_RUN}/) |")
  assert "| first 1,000 of test | 77.7 |" in rendered[4] and rendered[4].endswith("| 12.3 |")
  assert rendered[5].startswith("| [heldout_fgsm_rs]")
  assert "| first 1,000 of train[45000:] | 63.7 | — | 32.2 | — |" in rendered[5]
  assert rendered[5].endswith("| — |")
  assert "stale" not in rendered


def test_a_comparison_of_an_unknown_run_is_an_error():
  text = "<!-- comparison of results/: no_such_run -->\n<!-- end of comparison -->\n"
  with pytest.raises(ValueError, match="compares no_such_run, not run folders of results/"):
    results.replace_comparisons(text, results.load_runs(results.RESULTS_DIR))
