"""One copy of every log line, no advertisements, and the run's own lines in its log file.

Under Hydra the root logger has two handlers (console, and the run folder's train.log / eval.log). Lightning
adds its own console handler to the `lightning` logger at import time, so each of its INFO lines printed twice;
`quiet_logging` lets Lightning's records go through Hydra's handlers only, and drops Lightning's product
tips. `say` prints an `[eat]` line on the console and, under Hydra, writes it to the log file too.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import List, Optional

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
log = logging.getLogger("eat")


class DropTips(logging.Filter):
    """Lightning's "💡 Tip: ... try installing litlogger / litmodels" lines are advertisements."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip:" not in record.getMessage()


def _file_handlers() -> List[logging.FileHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def quiet_logging() -> None:
    root = logging.getLogger()
    hydra_logging = bool(_file_handlers())
    for name in LIGHTNING_LOGGERS:
        lg = logging.getLogger(name)
        if hydra_logging:  # Hydra's console and file handlers print Lightning's records: drop Lightning's own
            lg.handlers = [h for h in lg.handlers if not type(h) is logging.StreamHandler]
            lg.propagate = True
        for h in lg.handlers:
            if not any(isinstance(f, DropTips) for f in h.filters):
                h.addFilter(DropTips())
    for h in root.handlers:
        if not any(isinstance(f, DropTips) for f in h.filters):
            h.addFilter(DropTips())


def say(msg: str) -> None:
    """An [eat] line: on stdout, and in the run's log file when Hydra has set one up."""
    if _file_handlers() and log.isEnabledFor(logging.INFO):
        log.info(msg)  # Hydra's console handler prints it as is, its file handler with a timestamp
    else:
        print(msg, flush=True)


def to_log_file(msg: str, level: int = logging.ERROR) -> None:
    """Write to the run's log file only (the console already has the message)."""
    for h in _file_handlers():
        h.handle(logging.LogRecord("eat", level, __file__, 0, msg, None, None))
        h.flush()


def run_dir() -> Optional[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.output_dir
    except Exception:  # not under a Hydra app (tests composing configs in-process)
        return None


def mark_failed(msg: str, detail: str = "") -> None:
    """A failed run says so in its folder: FAILED holds the error line (and the traceback if there was one)."""
    to_log_file(msg + (("\n" + detail) if detail else ""))
    d = run_dir()
    if d:
        try:
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "FAILED"), "w") as f:
                f.write(msg + "\n" + (detail + "\n" if detail else ""))
        except OSError:
            pass


def mark_unexpected(e: BaseException) -> None:
    detail = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    mark_failed(f"failed: {type(e).__name__}: {e}", detail)
    print(f"[eat] the run failed; see {os.path.join(run_dir() or '.', 'FAILED')}", file=sys.stderr)
