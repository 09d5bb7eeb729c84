"""Transparent huge pages for the host allocator, set before JAX starts.

XLA:CPU allocates a step's temporaries (about 1 GB for a ResNet-20 train step at batch 128) afresh
every step, and the kernel maps them in 4 KiB pages on first touch: about 287,000 page faults and
0.94 s of system time per step on the 2-core development machine (README.md, "Results"). Asking
glibc's malloc to back its large allocations with transparent huge pages (2 MiB) removes almost all
of them:

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1   (glibc >= 2.35; `madvise(MADV_HUGEPAGE)` on its memory)

`benchmarks/host_allocator.py` measures the difference. The setting must be in the environment
when the process starts, so the launchers call `reexec_with_huge_pages()` before importing JAX: it
re-executes the same command (same PID, interpreter options, arguments, and the environment plus
the tunable) once. It does nothing if GLIBC_TUNABLES is already set (set it to an empty string to
opt out), off Linux, or with a C library other than glibc >= 2.35.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Mapping

TUNABLES = "GLIBC_TUNABLES"
HUGE_PAGES = "glibc.malloc.hugetlb=1"
MIN_GLIBC = (2, 35)


def _version(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(part) for part in text.split("."))
  except ValueError:
    return ()


def huge_page_environment(environ: Mapping[str, str], system: str, libc: tuple[str, str],
                          ) -> dict[str, str] | None:
  """The environment to restart with (`environ` plus the tunable), or None to change nothing.

  Args:
    environ: the current environment.
    system: `platform.system()`.
    libc: `platform.libc_ver()`, e.g. ("glibc", "2.36").
  """
  name, version = libc
  if (TUNABLES in environ or system != "Linux" or name != "glibc"
      or _version(version) < MIN_GLIBC):
    return None
  return {**environ, TUNABLES: HUGE_PAGES}


def reexec_with_huge_pages() -> None:
  """Re-executes this Python command with huge pages for malloc, if that applies (see above)."""
  environ = huge_page_environment(os.environ, platform.system(), platform.libc_ver())
  if environ is not None:
    os.execve(sys.executable, sys.orig_argv, environ)  # the command as typed, options included
