"""Keeps the run's log readable: library chatter below WARNING is dropped from the absl handler.

Orbax logs a dozen INFO lines per checkpoint save; our progress lines would drown in them.
"""
import logging

from absl import logging as absl_logging

QUIET_LIBRARIES = ("/orbax/", "/tensorflow_datasets/", "/clu/", "/etils/")


class _DropLibraryInfo(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not any(
        part in record.pathname for part in QUIET_LIBRARIES)


def quiet_library_logs() -> None:
  """Drops INFO/DEBUG records of the libraries in QUIET_LIBRARIES; warnings still show."""
  absl_logging.get_absl_handler().addFilter(_DropLibraryInfo())
