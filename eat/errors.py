"""User errors (bad config, bad data, bad checkpoint) end the job with one clear line and exit code 2.

The line also goes to the run's log file, and a `FAILED` file in the run folder says the run failed (for any
error, with the traceback for unexpected ones)."""
import contextlib
import sys

from eat.config import ConfigError
from eat.data.sources import DataError
from eat.logs import mark_failed, mark_unexpected
from eat.model.hub import CheckpointError


@contextlib.contextmanager
def exit_on_user_error():
    try:
        yield
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        mark_failed(f"error: {e}")
        sys.exit(2)
    except Exception as e:  # a bug or a crash: Hydra prints the traceback; the folder and log file record it
        mark_unexpected(e)
        raise
