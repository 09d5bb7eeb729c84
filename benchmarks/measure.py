"""What the benchmarks measure a compiled step with: its FLOPs (loops counted in full), its memory
and the machine it ran on. Imports jax alone, so that any benchmark can use it."""
import os
import platform

import jax
from jax.extend import core as jax_core
import jaxlib


def xla_flops(compiled: jax.stages.Compiled) -> float:
  """FLOPs of XLA's cost analysis, summed over its entries (one per compiled module)."""
  analysis = compiled.cost_analysis()
  entries = analysis if isinstance(analysis, (list, tuple)) else [analysis]
  return float(sum(entry.get("flops", 0.0) for entry in entries))


def uncounted_loop_flops(jaxpr: jax_core.Jaxpr) -> float:
  """FLOPs of the loop iterations that XLA's cost analysis of `jaxpr` leaves out.

  XLA counts a loop body once. A scan of n iterations unrolled by k is a loop whose body holds k
  copies, followed by n mod k copies; XLA counts c = k + n mod k copies (c = n when k >= n: no
  loop is left). With b the FLOPs of one copy by XLA's count and u those its own loops leave out,
  the truth is n (b + u) against XLA's c b: this returns the sum over the loops of
  n u + (n - c) b, looking into every sub-jaxpr (calls, branches, custom rules).

  Raises:
    ValueError: for a `while` loop, whose trip count is not known at compile time.
  """
  missing = 0.0
  for equation in jaxpr.eqns:
    if equation.primitive.name == "while":
      raise ValueError("the step has a while loop with a dynamic trip count; its FLOPs cannot be "
                       "counted (a fori_loop with static bounds is a scan and can)")
    if equation.primitive.name == "scan":
      body = equation.params["jaxpr"]
      trips, unroll = equation.params["length"], int(equation.params["unroll"])
      counted = trips if unroll >= trips else unroll + trips % unroll
      avals = [jax.ShapeDtypeStruct(aval.shape, aval.dtype) for aval in body.in_avals]
      body_flops = xla_flops(jax.jit(jax_core.jaxpr_as_fun(body)).lower(*avals).compile())
      missing += trips * uncounted_loop_flops(body.jaxpr) + (trips - counted) * body_flops
    else:
      missing += sum(uncounted_loop_flops(sub) for sub in jax_core.jaxprs_in_params(
          equation.params))
  return missing


def peak_memory_bytes(compiled: jax.stages.Compiled) -> int | None:
  """Arguments + outputs + temporaries - aliased bytes of XLA's buffer assignment (None if n/a)."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
             + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def machine_info() -> dict[str, object]:
  """The machine, the JAX versions, the devices and the load average when it is called."""
  return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
          "processor": platform.processor() or platform.machine(),
          "python": platform.python_version(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "backend": jax.default_backend(),
          "devices": [str(device) for device in jax.devices()],
          "load_average_at_start": os.getloadavg()}
