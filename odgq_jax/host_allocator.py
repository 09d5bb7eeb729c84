"""Transparent huge pages for the host allocator, set before JAX starts.

XLA:CPU allocates a step's temporaries (about 1 GB for a ResNet-20 train step at batch 128) afresh
every step, and the kernel maps them in 4 KiB pages on first touch: hundreds of thousands of page
faults per step (docs/experiments.md has the measurements). Asking glibc's malloc to back its large
allocations with transparent huge pages (2 MiB) removes almost all of them:

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1   (glibc >= 2.35; `madvise(MADV_HUGEPAGE)` on its memory)

`benchmarks/host_allocator.py` measures the difference. The setting must be in the environment
when the process starts, so the launchers call `reexec_with_huge_pages()` before importing JAX: it
re-executes the same command (same PID, interpreter options, arguments, and the environment plus
the tunable) once. It does nothing if GLIBC_TUNABLES is already set (set it to an empty string to
opt out), off Linux, with a C library other than glibc >= 2.35, or when JAX will not run on its
CPU backend: on an accelerator the step's temporaries live in device memory, not malloc's, and
the restart would only cost time.

Which backend JAX will pick is decided here without importing JAX, as JAX decides it:
JAX_PLATFORMS, if set, lists the platforms in priority order, so the CPU runs the program when
"cpu" comes first; unset, JAX prefers any accelerator it has a plugin for (a module of the
`jax_plugins` namespace package or a `jax_plugins` entry point: the CUDA and ROCm plugins; or the
`libtpu` package). A host with an accelerator plugin but no accelerator falls back to the CPU
without huge pages; `JAX_PLATFORMS=cpu` brings them back.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pkgutil
import platform
import sys
from typing import Mapping, Sequence

TUNABLES = "GLIBC_TUNABLES"
PLATFORMS = "JAX_PLATFORMS"
HUGE_PAGES = "glibc.malloc.hugetlb=1"
MIN_GLIBC = (2, 35)


def _version(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(part) for part in text.split("."))
  except ValueError:
    return ()


def installed_accelerator_plugins() -> tuple[str, ...]:
  """The JAX accelerator plugins this interpreter would load, found without importing JAX.

  The modules of the `jax_plugins` namespace package, the `jax_plugins` entry points (how JAX
  finds PJRT plugins such as jax-cuda12-plugin) and "libtpu" if that package is installed.
  """
  found = set()
  namespace = importlib.util.find_spec("jax_plugins")
  if namespace is not None and namespace.submodule_search_locations:
    found.update(f"jax_plugins.{module.name}"
                 for module in pkgutil.iter_modules(namespace.submodule_search_locations))
  found.update(entry_point.value
               for entry_point in importlib.metadata.entry_points(group="jax_plugins"))
  if importlib.util.find_spec("libtpu") is not None:
    found.add("libtpu")
  return tuple(sorted(found))


def runs_on_cpu(environ: Mapping[str, str], accelerator_plugins: Sequence[str]) -> bool:
  """Whether JAX's default backend will be the CPU (see the module doc).

  Args:
    environ: the environment JAX will start in.
    accelerator_plugins: `installed_accelerator_plugins()`.
  """
  platforms = [name.strip() for name in environ.get(PLATFORMS, "").split(",") if name.strip()]
  if platforms:
    return platforms[0] == "cpu"
  return not accelerator_plugins


def huge_page_environment(environ: Mapping[str, str], system: str, libc: tuple[str, str],
                          accelerator_plugins: Sequence[str]) -> dict[str, str] | None:
  """The environment to restart with (`environ` plus the tunable), or None to change nothing.

  Args:
    environ: the current environment.
    system: `platform.system()`.
    libc: `platform.libc_ver()`, e.g. ("glibc", "2.36").
    accelerator_plugins: `installed_accelerator_plugins()`.
  """
  name, version = libc
  if (TUNABLES in environ or system != "Linux" or name != "glibc"
      or _version(version) < MIN_GLIBC or not runs_on_cpu(environ, accelerator_plugins)):
    return None
  return {**environ, TUNABLES: HUGE_PAGES}


def reexec_with_huge_pages() -> None:
  """Re-executes this Python command with huge pages for malloc, if that applies (see above)."""
  environ = huge_page_environment(os.environ, platform.system(), platform.libc_ver(),
                                  installed_accelerator_plugins())
  if environ is not None:
    os.execve(sys.executable, sys.orig_argv, environ)  # the command as typed, options included
