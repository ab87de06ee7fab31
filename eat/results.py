"""The results table (one row per eval split and batch size) and per-example prediction files.

Rows are appended atomically: one `write` of whole lines under an exclusive `flock`, so a killed job never
leaves a torn row and concurrent multirun jobs never interleave. Prediction files are written to a temp
file and renamed into place.
"""
from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import subprocess
import tempfile
from typing import Dict, Iterable, List, Mapping, Optional

# Documented in README.md ("Results columns"). New columns are appended at the end, never reordered.
COLUMNS: List[str] = [
    "run_id", "timestamp", "git_sha", "config_hash", "task", "split", "model", "mechanism", "mode", "seed",
    "batch_size", "device", "threads", "n_examples",
    "accuracy", "f1", "mcc", "pearson", "spearman",
    "latency_ms_mean", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_per_example",
    "throughput_eps",
    "avg_exit_layer", "num_layers", "avg_token_retention", "gflops_per_example", "gflops_static_per_example",
    "flops_reduction", "mechanism_params", "ckpt_path", "output_dir",
    # where the mechanism settings came from: selection | dev | manual (RunConfig.operating_point_source)
    "operating_point_source",
    # rows of the declared harness (eat.bench): the passes, the baseline's label, and the median and the min-max
    # of the per-pass speed-ups against it (empty in rows of the Lightning evaluation loop)
    "harness", "passes", "speedup_vs", "speedup", "speedup_min", "speedup_max",
    "latency_warning",
    # how the encoder executed (RunConfig.runtime: eager, int8, ort, ort_int8; "+whole" / "+optimized" with
    # runtime.graph=whole / optimized);
    # peers name themselves in `model`
    "runtime",
]

# The per-example predictions files (results.prediction_path) of eval.py and the harness, column by column.
PREDICTION_FIELDS = ("idx", "label", "pred", "exit_layer", "tokens_in", "tokens_final", "gflops", "gflops_static")


def uses(mechanism: str, part: str) -> bool:
    """Whether a `mechanism` value (a combination name such as prune+sparse+exit) contains the plug-in `part`."""
    return part in mechanism.split("+")


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except Exception:
        return "unknown"


def _under_run_dir(v, run_dir: str):
    """`v` with the run folder in every string replaced by a placeholder."""
    if isinstance(v, dict):
        return {k: _under_run_dir(x, run_dir) for k, x in v.items()}
    if isinstance(v, list):
        return [_under_run_dir(x, run_dir) for x in v]
    return v.replace(run_dir, "${output_dir}") if isinstance(v, str) else v


def config_hash(cfg: Mapping) -> str:
    """Hash of what determines a result: everything but paths, loggers and bookkeeping keys."""
    ignore = {"output_dir", "results_csv", "logger", "skip_completed", "eval_batch_sizes"}
    payload = {k: v for k, v in cfg.items() if k not in ignore}
    if cfg.get("output_dir"):  # paths under the run folder (the checkpoint callback's dirpath) are bookkeeping
        payload = _under_run_dir(payload, str(cfg["output_dir"]))
    if isinstance(payload.get("trainer"), dict):  # progress bars do not change results
        payload["trainer"] = {k: v for k, v in payload["trainer"].items() if k != "enable_progress_bar"}
    ckpt = (payload.get("callbacks") or {}).get("model_checkpoint") if isinstance(payload.get("callbacks"), dict) else None
    if isinstance(ckpt, dict):  # what a checkpoint file keeps (optimizer state, last.ckpt) does not change results
        payload["callbacks"] = {**payload["callbacks"], "model_checkpoint": {
            k: v for k, v in ckpt.items() if k not in ("save_weights_only", "save_last")}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _format(row: Mapping) -> Dict[str, str]:
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise KeyError(f"results row has columns not in eat.results.COLUMNS: {sorted(unknown)}")
    out = {}
    for c in COLUMNS:
        v = row.get(c)
        out[c] = "" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))
    return out


def append_rows(path: str, rows: Iterable[Mapping]) -> None:
    """Append rows to the CSV at `path` (header written if the file is new) in one locked write.

    A file written before columns were appended to COLUMNS is first rewritten with the new header (its rows
    keep their values, the new columns stay empty), through a temp file and a rename, so a kill never leaves
    a half-written table. A writer that was waiting on the old file notices the rename and starts over."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    for row in rows:
        writer.writerow(_format(row))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                continue  # replaced by a migration while we waited: lock the new file instead
            data = buf.getvalue()
            if os.fstat(fd).st_size == 0:
                data = ",".join(COLUMNS) + "\n" + data
            else:
                _migrate_header(path)
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    continue
            os.write(fd, data.encode())
            os.fsync(fd)
            return
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _migrate_header(path: str) -> None:
    """Rewrite a results CSV whose header is an older prefix of COLUMNS with the current header."""
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    if header == COLUMNS:
        return
    if header != COLUMNS[:len(header)]:
        raise ValueError(f"{path}: its header is not an earlier version of eat.results.COLUMNS; "
                         f"write to a new results_csv")
    old = read_rows(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n", restval="")
        w.writeheader()
        w.writerows(old)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_rows(path: str) -> List[Dict[str, str]]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def prediction_path(folder: str, split: str, batch_size: int) -> str:
    """Where an evaluation's per-example predictions for one split and batch size are written (eval.py, eat.bench)."""
    return os.path.join(folder, f"predictions_{split}_bs{batch_size}.csv")


def write_csv_atomic(path: str, columns: List[str], data: Mapping[str, list]) -> None:
    """Write columns of equal length to `path` via a temp file + rename (never a half-written file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        w.writerows(zip(*(data[c] for c in columns)))
    os.replace(tmp, path)


def summarize(records: Mapping[str, list], num_layers: int) -> Dict[str, Optional[float]]:
    """Adaptive-inference statistics of one evaluation, from its per-example records."""
    n = len(records["idx"])
    if n == 0:
        return {}
    g, gs = sum(records["gflops"]) / n, sum(records["gflops_static"]) / n
    return {
        "avg_exit_layer": sum(records["exit_layer"]) / n,
        "num_layers": num_layers,
        "avg_token_retention": sum(f / max(i, 1) for f, i in zip(records["tokens_final"], records["tokens_in"])) / n,
        "gflops_per_example": g,
        "gflops_static_per_example": gs,
        "flops_reduction": gs / g if g > 0 else None,
    }


def result_row(rc, plain: Mapping, *, run_id: str, split: str, batch_size: int, device: str, metrics: Mapping,
               records: Mapping[str, list], num_layers: int, output_dir: str, harness: str,
               ckpt_path: Optional[str] = None, mechanism: Optional[Mapping] = None, **measured) -> Dict:
    """One results row of an evaluation of `rc` (eat.config.RunConfig; `plain`: its resolved config as a dict, for
    the config hash and the mechanism settings): who ran what, the metrics, the adaptive statistics of the
    per-example `records`, and the `measured` timing columns. eval.py and the harness (eat.bench) both write
    these rows; `_format` refuses a column that is not in COLUMNS."""
    import time

    import torch

    mech = dict(mechanism if mechanism is not None else plain["mechanism"])
    return {
        "run_id": run_id, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "git_sha": git_sha(),
        "config_hash": config_hash(plain), "task": rc.task.name, "split": split, "model": rc.peer or rc.model.name,
        "mechanism": rc.mechanism.name, "mode": rc.mechanism.mode, "seed": rc.seed, "batch_size": batch_size,
        "device": device, "threads": torch.get_num_threads(), "n_examples": len(records["idx"]),
        **metrics, **summarize(records, num_layers),
        "mechanism_params": json.dumps({k: v for k, v in mech.items() if k != "name"}, sort_keys=True),
        "ckpt_path": (rc.ckpt_path if ckpt_path is None else ckpt_path) or "", "output_dir": output_dir,
        "operating_point_source": rc.operating_point_source, "harness": harness, "runtime": rc.runtime.name + ("" if rc.runtime.graph == "layer" else f"+{rc.runtime.graph}"),
        **measured,
    }
