"""Reading GLUE splits from the hub, local GLUE TSV folders, or local HF parquet files.

Every source returns the same columns: `text_a`, `text_b` (pairs only), `label`, `idx` (row number in the
split's file), so tokenisation never knows where the data came from.
"""
from __future__ import annotations

import glob
import os
import socket
from typing import Dict, List, Optional

from eat.data.tasks import TASKS, TaskSpec, missing_file_hint

Columns = Dict[str, list]


class DataError(ValueError):
    """A data file is malformed. The message names the file and the line."""


def read_glue_tsv(path: str, spec: TaskSpec) -> Columns:
    """Read a GLUE TSV exactly as written: tab-separated, quoting off, text kept byte for byte."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found (task {spec.name})")
    with open(path, "rb") as f:
        raw_lines = f.read().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    lines: List[str] = []
    for n, raw in enumerate(raw_lines, start=1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{n}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if not lines:
        raise DataError(f"{path}:1: empty file (expected a header line and rows)")

    if spec.tsv_positions is not None:  # header-less file (CoLA): fixed column positions
        (text_cols, label_col), first, width = spec.tsv_positions, 0, None
    else:
        header = lines[0].split("\t")
        missing = [c for c in (*spec.tsv_text_columns, spec.tsv_label_column) if c not in header]
        if missing:
            raise DataError(f"{path}:1: missing column(s) {missing}; header has {header}")
        text_cols = tuple(header.index(c) for c in spec.tsv_text_columns)
        label_col, first, width = header.index(spec.tsv_label_column), 1, len(header)
    if len(lines) <= first:
        raise DataError(f"{path}:{first + 1}: no data rows after the header (the file has {len(lines)} line(s))")

    out: Columns = {"text_a": [], "label": [], "idx": []}
    if len(text_cols) == 2:
        out["text_b"] = []
    need = max(*text_cols, label_col) + 1
    for n, line in enumerate(lines[first:], start=first + 1):
        fields = line.split("\t")
        if (width is not None and len(fields) != width) or len(fields) < need:
            raise DataError(f"{path}:{n}: expected {width or need} tab-separated fields, found {len(fields)}")
        for key, col in zip(("text_a", "text_b"), text_cols):
            if fields[col].strip() == "":
                raise DataError(f"{path}:{n}: empty text in column {col + 1}")
            out[key].append(fields[col])
        out["label"].append(_parse_label(fields[label_col], spec, f"{path}:{n}"))
        out["idx"].append(n - first - 1)
    return out


def _parse_label(value: str, spec: TaskSpec, where: str):
    if spec.is_regression:
        try:
            return float(value)
        except ValueError:
            raise DataError(f"{where}: label {value!r} is not a number (task {spec.name} is a regression)") from None
    if spec.label_names:
        if value not in spec.label_names:
            raise DataError(f"{where}: label {value!r} not in the {spec.name} label set {list(spec.label_names)}")
        return spec.label_names.index(value)
    allowed = [str(i) for i in range(spec.num_labels)]
    if value not in allowed:
        raise DataError(f"{where}: label {value!r} not in the {spec.name} label set {allowed}")
    return int(value)


def _from_hf(ds, spec: TaskSpec, where: str) -> Columns:
    """Columns from a HF `datasets.Dataset` in the nyu-mll/glue schema."""
    missing = [c for c in (*spec.text_keys, "label") if c not in ds.column_names]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; has {ds.column_names}")
    out: Columns = {"text_a": list(ds[spec.text_keys[0]]), "label": list(ds["label"])}
    if len(spec.text_keys) == 2:
        out["text_b"] = list(ds[spec.text_keys[1]])
    out["idx"] = list(ds["idx"]) if "idx" in ds.column_names else list(range(len(ds)))
    return out


def load_split(spec: TaskSpec, split: str, source: str, root: Optional[str], hub_path: str,
               file: Optional[str] = None) -> Columns:
    """Load one split. `file` (a .tsv or .parquet path) overrides the source's default location."""
    if file is not None:
        source = "parquet" if file.endswith(".parquet") else "tsv"
    if source == "tsv":
        path = file or os.path.join(root or ".", spec.folder, spec.split_files[split])
        return read_glue_tsv(path, spec)
    import datasets  # imported lazily: the TSV path needs none of it

    if source == "parquet":
        pattern = file or os.path.join(root or ".", spec.hub_name, f"{split}-*.parquet")
        files = sorted(glob.glob(pattern))
        if not files:
            raise DataError(f"{pattern}: no parquet file found for split {split!r} of task {spec.name}")
        ds = datasets.load_dataset("parquet", data_files={split: files}, split=split)
        return _from_hf(ds, spec, files[0])
    try:
        ds = datasets.load_dataset(hub_path, spec.hub_name, split=split)
    except (ConnectionError, OSError) as e:
        raise DataError(f"{hub_path}/{spec.hub_name}:{split}: cannot load from the hub ({type(e).__name__}: {e}); "
                        "offline, point data.dir (or EAT_GLUE_DIR) at a local GLUE folder") from None
    return _from_hf(ds, spec, f"{hub_path}/{spec.hub_name}:{split}")


def slice_columns(cols: Columns, spec: str) -> Columns:
    """Apply a "start:stop" row slice (the QQP offline protocol trains on rows 0:30000 of dev)."""
    start, stop = (int(p) if p.strip() else None for p in spec.split(":"))
    return {k: v[start:stop] for k, v in cols.items()}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def check_sources(task, data, splits: List[str], connect_timeout: float = 3.0) -> None:
    """Before the tokenizer or the model is loaded: every local file the run will read exists, and the hub is
    reachable when the data comes from it. One DataError line that says what to do, in a few seconds at most
    (the datasets library would otherwise retry the hub with back-off for ~30 s)."""
    spec = TASKS[task.name]
    source = data.source if data.source != "auto" else ("tsv" if data.dir else "hub")
    wanted = list(dict.fromkeys("train" if s == "selection" else s for s in splits))
    if source == "tsv" or any(s in data.split_files for s in wanted):
        for split in wanted:
            file = data.split_files.get(split)
            if file is None and source != "tsv":
                continue
            path = file or os.path.join(data.dir or ".", spec.folder, spec.split_files[split])
            found = glob.glob(path) if any(c in path for c in "*?[") else os.path.isfile(path)  # parquet patterns
            if not found:
                raise DataError(f"{path}: file not found ({missing_file_hint(spec, split)})")
    if source != "hub" or all(s in data.split_files for s in wanted):
        return
    fix = "point data.dir (or EAT_GLUE_DIR) at a local GLUE folder (README: Data)"
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if _env_true(var):
            raise DataError(f"data.dir is not set, so task {task.name} would be read from the hub "
                            f"({data.hub_path}), but {var}={os.environ[var]}: {fix}")
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host.split(":")[0], int(host.split(":")[1]) if ":" in host else 443),
                                 timeout=connect_timeout).close()
    except OSError as e:
        raise DataError(f"data.dir is not set and the hub ({host}) cannot be reached "
                        f"({type(e).__name__}: {e or 'timed out'}): offline? {fix}") from None
