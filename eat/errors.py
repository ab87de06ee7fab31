"""User errors (bad config, bad data, bad checkpoint) end the job with one clear line and exit code 2."""
import contextlib
import sys

from eat.config import ConfigError
from eat.data.sources import DataError
from eat.model.hub import CheckpointError


@contextlib.contextmanager
def exit_on_user_error():
    try:
        yield
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
