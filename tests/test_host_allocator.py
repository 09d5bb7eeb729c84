"""Huge pages for the host allocator: when the launchers restart themselves with them."""
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from odgq_jax import host_allocator

REPO = Path(__file__).resolve().parents[1]
GLIBC = ("glibc", "2.36")
CUDA_PLUGIN = ("jax_plugins.xla_cuda12",)


def test_adds_the_tunable_on_a_recent_glibc_linux_running_jax_on_the_cpu():
  environ = host_allocator.huge_page_environment({"PATH": "/bin"}, "Linux", GLIBC, ())
  assert environ == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  environ = host_allocator.huge_page_environment({"JAX_PLATFORMS": "cpu"}, "Linux", GLIBC,
                                                 CUDA_PLUGIN)
  assert environ == {"JAX_PLATFORMS": "cpu", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def test_changes_nothing_when_it_does_not_apply():
  assert host_allocator.huge_page_environment({"GLIBC_TUNABLES": ""}, "Linux", GLIBC, ()) is None
  assert host_allocator.huge_page_environment(
      {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "Linux", GLIBC, ()) is None
  assert host_allocator.huge_page_environment({}, "Darwin", ("", ""), ()) is None
  assert host_allocator.huge_page_environment({}, "Linux", ("glibc", "2.31"), ()) is None
  assert host_allocator.huge_page_environment({}, "Linux", ("", ""), ()) is None  # e.g. musl
  # JAX on an accelerator: the step's memory is the device's.
  assert host_allocator.huge_page_environment({}, "Linux", GLIBC, CUDA_PLUGIN) is None
  assert host_allocator.huge_page_environment({"JAX_PLATFORMS": "tpu"}, "Linux", GLIBC, ()) is None


@pytest.mark.parametrize("environ,plugins,expected", [
    ({}, (), True),
    ({}, CUDA_PLUGIN, False),
    ({}, ("libtpu",), False),
    ({"JAX_PLATFORMS": ""}, CUDA_PLUGIN, False),  # empty is unset
    ({"JAX_PLATFORMS": "cpu"}, CUDA_PLUGIN, True),
    ({"JAX_PLATFORMS": "cuda"}, (), False),
    ({"JAX_PLATFORMS": "cuda,cpu"}, CUDA_PLUGIN, False),  # the first listed is preferred
    ({"JAX_PLATFORMS": " cpu , cuda"}, CUDA_PLUGIN, True),
])
def test_the_backend_is_judged_from_jax_platforms_then_the_installed_plugins(environ, plugins,
                                                                              expected):
  assert host_allocator.runs_on_cpu(environ, plugins) is expected


def test_installed_plugins_are_found_as_jax_finds_them(tmp_path, monkeypatch):
  # A namespace-package plugin (jax_plugins/ without __init__.py) and the libtpu package.
  (tmp_path / "jax_plugins" / "xla_fake").mkdir(parents=True)
  (tmp_path / "jax_plugins" / "xla_fake" / "__init__.py").write_text("")
  (tmp_path / "libtpu").mkdir()
  (tmp_path / "libtpu" / "__init__.py").write_text("")
  monkeypatch.syspath_prepend(str(tmp_path))
  found = host_allocator.installed_accelerator_plugins()
  assert "jax_plugins.xla_fake" in found and "libtpu" in found


def _tunable_after_reexec(**environ) -> str:
  """GLIBC_TUNABLES as seen by a command that called `reexec_with_huge_pages()` first."""
  code = ("from odgq_jax import host_allocator; host_allocator.reexec_with_huge_pages(); "
          "import os; print(os.environ.get('GLIBC_TUNABLES'))")
  base = {k: v for k, v in os.environ.items()
          if k not in (host_allocator.TUNABLES, host_allocator.PLATFORMS)}
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=base | environ,
                          capture_output=True, text=True, timeout=60, check=True)
  return result.stdout.strip()


def test_the_restart_happens_only_for_the_cpu_backend():
  assert _tunable_after_reexec(JAX_PLATFORMS="cuda") == "None"
  assert _tunable_after_reexec(JAX_PLATFORMS="cpu", GLIBC_TUNABLES="") == ""
  applies = host_allocator.huge_page_environment({}, platform.system(), platform.libc_ver(), ())
  expected = host_allocator.HUGE_PAGES if applies else "None"
  assert _tunable_after_reexec(JAX_PLATFORMS="cpu") == expected
