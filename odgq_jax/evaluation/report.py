"""Writes an evaluation report: `report.json`, the markdown table `report.md` and the plot
`robust_vs_eps.png`."""
from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from odgq_jax.evaluation import protocol as protocol_lib  # pylint: disable=wrong-import-position


def _percent(value: float | None) -> str:
  return "skipped" if value is None else f"{100 * value:.1f}"


def markdown(report: dict, title: str) -> str:
  """The report as a markdown table: clean, each attack, worst case; then the sanity checks."""
  lines = [f"# {title}", "",
           f"Protocol `{report['protocol']}`, {report['num_examples']} examples, "
           f"eps = {report['eps'] * 255:.0f}/255. Verdict: **{report['verdict']}**.", "",
           "| attack | kind | accuracy (%) | seconds |", "| --- | --- | --- | --- |",
           f"| clean | | {_percent(report['clean'])} | {report['seconds'].get('clean', 0):.0f} |"]
  for name, accuracy in report["attacks"].items():
    kind = "black-box" if name in protocol_lib.BLACK_BOX else "white-box"
    seconds = report["seconds"].get(name)
    lines.append(f"| {name} | {kind} | {_percent(accuracy)} | "
                 f"{'' if seconds is None else f'{seconds:.0f}'} |")
  lines += [f"| **worst case** | all of the above | **{_percent(report['worst_case'])}** | |", ""]
  if report["sanity"]:
    lines += ["| sanity check | passed | detail |", "| --- | --- | --- |"]
    for name, check in report["sanity"].items():
      lines.append(f"| {name} | {'yes' if check['passed'] else '**no**'} | {check['detail']} |")
  else:
    lines.append("A subset of the attacks ran, so the sanity checks did not: these numbers are "
                 "not a robustness claim.")
  by_reason = {}
  for name, reason in report.get("skipped", {}).items():
    by_reason.setdefault(reason, []).append(name)
  for reason, names in by_reason.items():
    lines.append(f"\nSkipped, {reason}: {', '.join(names)}.")
  return "\n".join(lines) + "\n"


def plot_robust_vs_eps(report: dict, path: str, title: str) -> None:
  """Robust accuracy (PGD-20) against eps, in units of 1/255."""
  eps = [e * 255 for e in report["robust_vs_eps"]["eps"]]
  accuracy = [100 * a for a in report["robust_vs_eps"]["accuracy"]]
  figure, axes = plt.subplots(figsize=(5, 3.5))
  axes.plot(eps, accuracy, marker="o")
  axes.set_xscale("log", base=2)
  axes.set_xlabel("eps (x 1/255, L-inf)")
  axes.set_ylabel("PGD-20 accuracy (%)")
  axes.set_ylim(0, 100)
  axes.set_title(title, fontsize=9)
  axes.grid(True, alpha=0.3)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def write_report(report: dict, output_json: str, title: str) -> dict[str, str]:
  """Writes the JSON to `output_json` and report.md beside it, and robust_vs_eps.png when the
  report has the curve (a complete protocol run); returns the paths written."""
  directory = os.path.dirname(os.path.abspath(output_json))
  os.makedirs(directory, exist_ok=True)
  paths = {"json": output_json, "markdown": os.path.join(directory, "report.md")}
  with open(paths["json"], "w") as f:
    json.dump(report, f, indent=2)
  with open(paths["markdown"], "w") as f:
    f.write(markdown(report, title))
  if report["robust_vs_eps"] is not None:
    paths["plot"] = os.path.join(directory, "robust_vs_eps.png")
    plot_robust_vs_eps(report, paths["plot"], title)
  return paths
