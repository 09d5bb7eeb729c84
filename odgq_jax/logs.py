"""Keeps the run's log readable: library chatter below WARNING is dropped from the absl handler.

Orbax logs a dozen INFO lines per checkpoint save; our progress lines would drown in them. And when
a checkpoint cannot be read, orbax closes its event loop while TensorStore still has reads of the
other arrays in flight; each of them then reports a "RuntimeError: Event loop is closed" traceback
as an unraisable exception, dozens of tracebacks around the one error that matters. Those are
dropped too.
"""
import logging
import sys

from absl import logging as absl_logging

QUIET_LIBRARIES = ("/orbax/", "/tensorflow_datasets/", "/clu/", "/etils/")


class _DropLibraryInfo(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not any(
        part in record.pathname for part in QUIET_LIBRARIES)


def _drop_closed_event_loop_reports(report_unraisable):
  """An unraisable hook that drops "Event loop is closed" RuntimeErrors and reports the rest."""

  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
      report_unraisable(unraisable)

  return hook


def quiet_library_logs() -> None:
  """Drops INFO/DEBUG records of the libraries in QUIET_LIBRARIES (warnings still show), and the
  closed-event-loop reports of a failed checkpoint read (module doc)."""
  absl_logging.get_absl_handler().addFilter(_DropLibraryInfo())
  sys.unraisablehook = _drop_closed_event_loop_reports(sys.unraisablehook)
