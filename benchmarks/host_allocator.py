"""Train-step time and page faults with and without huge pages for the host allocator.

  python benchmarks/host_allocator.py --methods natural,odgq --steps 8

For each setting of GLIBC_TUNABLES (unset, and `glibc.malloc.hugetlb=1`, what the launchers set:
`odgq_jax/host_allocator.py`), runs this script again in a child process with that environment;
the child times the methods' ResNet-20 W4A4 train steps as `step_cost.py` builds them (batch
--batch_size, synthetic data) and reports per step: median wall time, user and system CPU seconds
and minor page faults (`getrusage`, averaged over --steps steps after 3 warm-up steps). Prints a
markdown table.
"""
import json
import os
import resource
import statistics
import subprocess
import sys

from absl import app
from absl import flags

import step_cost  # defines --methods, --steps, --batch_size
from odgq_jax import host_allocator

flags.DEFINE_bool("child", False, "Measure in this process and print JSON (internal).")
FLAGS = flags.FLAGS
WARMUP_STEPS = 3
SETTINGS = {"unset": None, "huge pages": host_allocator.HUGE_PAGES}


def measure() -> dict[str, dict[str, float]]:
  """Per-step wall, CPU and page-fault figures of each method, in this process."""
  from odgq_jax import logs, parallel  # pylint: disable=import-outside-toplevel
  logs.quiet_library_logs()
  mesh = parallel.create_mesh()
  batch = step_cost.synthetic_batch(FLAGS.batch_size, mesh)
  results = {}
  for name in FLAGS.methods:
    benchmark = step_cost.MethodBenchmark(name, batch, mesh)
    for _ in range(WARMUP_STEPS):
      benchmark.step()
    before = resource.getrusage(resource.RUSAGE_SELF)
    seconds = [benchmark.step() for _ in range(FLAGS.steps)]
    after = resource.getrusage(resource.RUSAGE_SELF)
    results[name] = {
        "step_seconds": statistics.median(seconds),
        "user_seconds": (after.ru_utime - before.ru_utime) / FLAGS.steps,
        "system_seconds": (after.ru_stime - before.ru_stime) / FLAGS.steps,
        "minor_faults": (after.ru_minflt - before.ru_minflt) / FLAGS.steps,
    }
  return results


def main(argv):
  del argv
  if FLAGS.child:
    print(json.dumps(measure()))
    return
  rows = ["| method | GLIBC_TUNABLES | s/step | user s/step | system s/step | page faults/step |",
          "|---|---|---:|---:|---:|---:|"]
  for label, value in SETTINGS.items():
    environ = {k: v for k, v in os.environ.items() if k != host_allocator.TUNABLES}
    if value is not None:
      environ[host_allocator.TUNABLES] = value
    output = subprocess.run(
        [sys.executable, __file__, "--child", f"--methods={','.join(FLAGS.methods)}",
         f"--steps={FLAGS.steps}", f"--batch_size={FLAGS.batch_size}"],
        env=environ, check=True, capture_output=True, text=True).stdout
    for name, r in json.loads(output.strip().splitlines()[-1]).items():
      rows.append(f"| {name} | {label} | {r['step_seconds']:.3f} | {r['user_seconds']:.3f} | "
                  f"{r['system_seconds']:.3f} | {r['minor_faults']:.0f} |")
  print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
