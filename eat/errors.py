"""User errors (bad config, bad data, bad checkpoint) end the job with one clear line and exit code 2.

The line also goes to the run's log file, and a `FAILED` file in the run folder says the run failed (for any
error, with the traceback for unexpected ones)."""
import contextlib
import sys

from eat.checks import CheckpointError, ConfigError
from eat.data.sources import DataError
from eat.logs import mark_failed, mark_unexpected


def user_errors() -> tuple:
    return ConfigError, DataError, CheckpointError


@contextlib.contextmanager
def exit_on_user_error():
    try:
        yield
    except Exception as e:
        if isinstance(e, user_errors()):
            print(f"error: {e}", file=sys.stderr)
            mark_failed(f"error: {e}")
            sys.exit(2)
        mark_unexpected(e)  # a bug or a crash: Hydra prints the traceback; the folder and log file record it
        raise
