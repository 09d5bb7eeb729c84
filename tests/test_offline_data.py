"""The end-to-end tests' data requirement: skipped without the offline copy, failed in CI."""
import pytest

from tests import offline_data


def test_a_missing_copy_skips_the_test_outside_ci(tmp_path):
  with pytest.raises(pytest.skip.Exception, match="no offline CIFAR-10 copy"):
    offline_data.check_available(tmp_path, environ={})


def test_a_missing_copy_fails_the_test_in_ci(tmp_path):
  with pytest.raises(pytest.fail.Exception, match="CI is set"):
    offline_data.check_available(tmp_path, environ={"CI": "true"})


def test_a_present_copy_lets_the_test_run(tmp_path):
  (tmp_path / offline_data.DATASET).mkdir()
  offline_data.check_available(tmp_path, environ={"CI": "true"})


@offline_data.requires_offline_cifar10
def test_the_marker_applies_the_check(request):
  # Reached only where the copy is present (elsewhere skipped, or failed in CI).
  assert request.node.get_closest_marker(offline_data.MARKER) is not None
  assert (offline_data.SHARED_DATA_DIR / offline_data.DATASET).exists()
