"""The offline CIFAR-10 copy beside the checkout, on which the end-to-end tests train and evaluate.

Mark such a test (or module) with `requires_offline_cifar10`. Where the copy is missing the test
is skipped, except when the environment variable CI is set: continuous integration must run the
end-to-end tests, so there a missing copy fails them instead of letting them pass as skipped.
tests/conftest.py applies the marker.
"""
import os
from pathlib import Path
from typing import Mapping

import pytest

SHARED_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "tensorflow_datasets"
DATASET = "cifar10_jpeg"
MARKER = "requires_offline_cifar10"
requires_offline_cifar10 = getattr(pytest.mark, MARKER)


def check_available(data_dir: Path = SHARED_DATA_DIR,
                    environ: Mapping[str, str] = os.environ) -> None:
  """Returns if `data_dir` holds the copy; else skips the test, or fails it when CI is set."""
  if (data_dir / DATASET).exists():
    return
  message = f"no offline CIFAR-10 copy at {data_dir / DATASET}"
  if environ.get("CI"):
    pytest.fail(f"{message}; CI is set, and the end-to-end tests must run there", pytrace=False)
  pytest.skip(message)
