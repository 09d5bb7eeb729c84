"""Huge pages for the host allocator: when the launchers restart themselves with them."""
from odgq_jax import host_allocator

GLIBC = ("glibc", "2.36")


def test_adds_the_tunable_on_a_recent_glibc_linux():
  environ = host_allocator.huge_page_environment({"PATH": "/bin"}, "Linux", GLIBC)
  assert environ == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def test_changes_nothing_when_it_does_not_apply():
  assert host_allocator.huge_page_environment({"GLIBC_TUNABLES": ""}, "Linux", GLIBC) is None
  assert host_allocator.huge_page_environment(
      {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "Linux", GLIBC) is None
  assert host_allocator.huge_page_environment({}, "Darwin", ("", "")) is None
  assert host_allocator.huge_page_environment({}, "Linux", ("glibc", "2.31")) is None
  assert host_allocator.huge_page_environment({}, "Linux", ("", "")) is None  # e.g. musl
