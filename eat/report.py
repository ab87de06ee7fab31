"""Benchmark report: markdown tables and figures from one or more results tables.

    python -m eat.report --results outputs/results.csv [--results more.csv ...] --out outputs/report [--wandb]

Writes to `--out`:
  tables.md                    one table per (task, split, batch size): accuracy (mean ± std over the rows of
                               a config, e.g. seeds), latency, throughput, speed-up and accuracy change vs the
                               static model, exit layer, token retention, FLOPs reduction and how much of it
                               became speed-up ("FLOPs realisation" = speed-up / FLOPs reduction)
  summary.csv                  the same numbers, unformatted
  frontier_<task>_bs<N>.png    accuracy vs latency per example, one point per config, Pareto set connected
  ablation_<task>_bs<N>.png    speed-up and accuracy per config
  exit_histogram_<task>.png    exit layers, from the per-example predictions files of the runs
  retention_<task>.png         token retention vs input length, from the same files

A config is (task, split, batch size, mechanism, mode, model, mechanism_params); all rows of a config are
aggregated, whichever run or results file they come from. Latency is the median everywhere: the per-batch p50
of a row (`latency_ms_p50`), the median over the rows of a config, and speed-up = static p50 / row p50 (same
batch size), so one stalled batch on a busy machine cannot turn a faster configuration into a slower one.
Rows whose timings look unreliable (`latency_warning`: p99 > 5x p50, or a warm-up that was too short) are
flagged in the tables and listed in the notes. The static reference of a row is the
mechanism=none, mode=compute rows of the same task, split and batch size, for the row's own model when it
has them, else for minilm_l6, else for any other model but the Hugging Face baseline (`hf_static`).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from eat import results
from eat.tables import markdown_table

# Byte-identical figures for identical input: a fixed font and sizes, and no software version or date in the
# PNG metadata.
STYLE = {"font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9,
         "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7, "savefig.dpi": 110,
         "path.simplify": True, "svg.hashsalt": "eat"}
PNG_METADATA = {"Software": None}


def save(fig: Figure, path: str) -> None:
    fig.savefig(path, dpi=110, metadata=PNG_METADATA)

HF_MODEL = "hf_static"
DEFAULT_MODEL = "minilm_l6"
CONFIG = ["task", "split", "batch_size", "mechanism", "mode", "model", "mechanism_params"]
# Columns the report cannot do without, from the schema eat.results.COLUMNS (tests/test_report.py checks they are
# in it); the other results columns are used when present.
REQUIRED = ["task", "split", "model", "mechanism", "mode", "seed", "batch_size", "accuracy",
            "latency_ms_p50", "latency_ms_per_example", "throughput_eps", "mechanism_params"]
NUMERIC = ["seed", "batch_size", "accuracy", "latency_ms_p50", "latency_ms_per_example", "throughput_eps"]
OPTIONAL_NUMERIC = ["f1", "mcc", "pearson", "spearman", "avg_exit_layer", "num_layers", "avg_token_retention",
                    "flops_reduction"]
SCORE_FALLBACKS = ["mcc", "pearson", "spearman", "f1"]  # tasks without accuracy (STS-B)
PREDICTION_COLUMNS = [c for c in results.PREDICTION_FIELDS if c in ("exit_layer", "tokens_in", "tokens_final")]


class ReportError(Exception):
    """Bad input: the message names the file and what is wrong."""


# ----------------------------------------------------------------------------------------------- loading
def read_results(paths: List[str]) -> pd.DataFrame:
    frames = []
    for path in paths:
        if not os.path.isfile(path):
            raise ReportError(f"results CSV not found: {path}")
        df = pd.read_csv(path, dtype=str, keep_default_na=False)  # "none" and "" stay strings
        missing = [c for c in REQUIRED if c not in df.columns]
        if missing:
            raise ReportError(f"{path} lacks required columns: {', '.join(missing)}")
        df["source_csv"] = os.path.abspath(path)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    if df.empty:
        raise ReportError(f"no result rows in {', '.join(paths)}")
    for c in ["run_id", "output_dir", "latency_warning"]:
        if c not in df.columns:
            df[c] = ""
    # one evaluation writes one row per (split, batch size); a harness run writes one per configuration too
    key = ["run_id", "split", "batch_size"] + (["config_hash"] if "config_hash" in df.columns else [])
    repeated = df.duplicated(key) & (df["run_id"] != "")
    df = df[~repeated]  # the same file (or row) given twice must not count twice
    for c in NUMERIC + OPTIONAL_NUMERIC:
        df[c] = pd.to_numeric(df[c], errors="coerce") if c in df.columns else np.nan
    df["batch_size"] = df["batch_size"].astype(int)
    df["mechanism_params"] = df["mechanism_params"].map(normalise_params)
    df["score"] = np.nan
    for task, rows in df.groupby("task"):
        df.loc[rows.index, "score"] = rows[score_metric(rows)]
    return df.reset_index(drop=True)


def normalise_params(text: str) -> str:
    try:
        return json.dumps(json.loads(text), sort_keys=True)
    except (TypeError, ValueError):
        return text or "{}"


def score_metric(rows: pd.DataFrame) -> str:
    """accuracy, or for tasks that do not report it the first metric they do report."""
    for c in ["accuracy", *SCORE_FALLBACKS]:
        if c in rows.columns and rows[c].notna().any():
            return c
    return "accuracy"


def flatten(d, prefix: str = "") -> Dict[str, object]:
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else []):
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        elif v is not None and k != "mode":
            out[f"{prefix}{k}"] = v
    return out


def add_labels(df: pd.DataFrame) -> pd.DataFrame:
    """`params`: the mechanism parameters that differ between configs of the same mechanism (a threshold
    sweep: exit.threshold=0.8); `label`: a short name for figures (mechanism/mode, params, model)."""
    flat = df["mechanism_params"].map(lambda s: flatten(json.loads(s)) if s.startswith("{") else {"params": s})
    varying = {}
    for mech, idx in df.groupby("mechanism").groups.items():
        # Every value as JSON text, a key a row lacks as "null": a setting that is present in some rows and
        # absent in others (calibrated vs uncalibrated) varies too. (`astype(str)` keeps NaN under pandas 3,
        # and nunique() ignores NaN, so such rows used to get the same label.)
        values = pd.DataFrame([{k: json.dumps(v, sort_keys=True) for k, v in flat[i].items()} for i in idx],
                              dtype=object).fillna("null")
        varying[mech] = [c for c in values.columns if values[c].nunique() > 1]
    several_models = df.loc[df["model"] != HF_MODEL, "model"].nunique() > 1
    params, labels = [], []
    for i, r in df.iterrows():
        params.append(", ".join(f"{k}={short(flat[i].get(k))}" for k in varying[r["mechanism"]]))
        name = HF_MODEL if r["model"] == HF_MODEL else f"{r['mechanism']}/{r['mode']}"
        name += f" [{params[-1]}]" if params[-1] else ""
        name += f" ({r['model']})" if several_models and r["model"] != HF_MODEL else ""
        labels.append(name)
    return df.assign(params=params, label=labels)


def short(v) -> str:
    """A setting in a label: numbers as written, lists of numbers compact, long lists elided."""
    if isinstance(v, list):  # fitted temperatures and the like: the first value tells the configs apart
        return "[" + ",".join(short(x) for x in v[:2]) + (",…" if len(v) > 2 else "") + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return "none" if v is None else str(v)


def natural_key(text: str) -> tuple:
    """Sort key that orders the numbers inside a label by value: threshold=0.9 before threshold=0.95."""
    parts = re.split(r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)", str(text))
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts))


# ----------------------------------------------------------------------------------------------- numbers
def is_static(df: pd.DataFrame) -> pd.Series:
    return (df["mechanism"] == "none") & (df["mode"] == "compute") & (df["model"] != HF_MODEL)


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per config (rows labelled by `add_labels`), with the comparison against the static reference."""
    # Rows of the declared harness (eat.bench) carry their own speed-up: the median of per-pass ratios against the
    # harness run's baseline, measured on the same batches. It is the number to quote; a ratio of p50s pooled over
    # seeds is not. Rows of the Lightning loop have none and get the ratio of medians below.
    df = df.assign(harness_speedup=pd.to_numeric(df["speedup"], errors="coerce") if "speedup" in df.columns
                   else np.nan)
    agg = df.groupby(CONFIG, sort=False).agg(
        harness_speedup=("harness_speedup", "median"),
        params=("params", "first"), label=("label", "first"), n=("score", "size"),
        seeds=("seed", lambda s: sorted(set(s.dropna().astype(int)))), score=("score", "mean"),
        score_std=("score", "std"), latency_ms_p50=("latency_ms_p50", "median"),
        latency_ms_per_example=("latency_ms_per_example", "mean"), throughput_eps=("throughput_eps", "mean"),
        avg_exit_layer=("avg_exit_layer", "mean"), num_layers=("num_layers", "max"),
        avg_token_retention=("avg_token_retention", "mean"), flops_reduction=("flops_reduction", "mean"),
        latency_warning=("latency_warning", lambda w: "; ".join(sorted({x for x in w if isinstance(x, str) and x}))),
    ).reset_index()
    # The median per-batch latency as ms per example (the frontier's x axis): p50 / batch size.
    agg["latency_ms_p50_per_example"] = agg["latency_ms_p50"] / agg["batch_size"]
    static = df[is_static(df)].groupby(["task", "split", "batch_size", "model"]).agg(
        static_latency=("latency_ms_p50", "median"), static_score=("score", "mean"))
    refs = [static_reference(static, r) for _, r in agg.iterrows()]
    agg["reference_model"] = [ref.name[-1] if ref is not None else "" for ref in refs]
    static_latency = pd.Series([ref["static_latency"] if ref is not None else np.nan for ref in refs])
    static_score = pd.Series([ref["static_score"] if ref is not None else np.nan for ref in refs])
    agg["speedup"] = (static_latency / agg["latency_ms_p50"]).where(agg["harness_speedup"].isna(),
                                                                     agg["harness_speedup"])
    agg["delta_points"] = 100.0 * (agg["score"] - static_score)
    agg["flops_realisation"] = agg["speedup"] / agg["flops_reduction"]
    order = np.where(is_static(agg), 0, np.where(agg["model"] == HF_MODEL, 1, 2))  # static, HF, the rest
    keys = [(r["task"], r["split"], r["batch_size"], o, natural_key(r["label"]))
            for (_, r), o in zip(agg.iterrows(), order)]
    ranked = sorted(range(len(agg)), key=lambda i: keys[i])  # numeric settings in numeric order
    return agg.iloc[ranked].reset_index(drop=True)


def static_reference(static: pd.DataFrame, r) -> Optional[pd.Series]:
    key = (r["task"], r["split"], r["batch_size"])
    try:
        candidates = static.loc[key]
    except KeyError:
        return None
    for model in [r["model"], DEFAULT_MODEL, *sorted(candidates.index)]:
        if model != HF_MODEL and model in candidates.index:
            return static.loc[(*key, model)]
    return None


# ----------------------------------------------------------------------------------------------- tables
def fmt(v, spec: str, suffix: str = "") -> str:
    return "–" if v is None or pd.isna(v) else f"{v:{spec}}{suffix}"


def table_rows(group: pd.DataFrame) -> List[List[str]]:
    rows = []
    for _, r in group.iterrows():
        seeds = ",".join(map(str, r["seeds"][:6])) + ("…" if len(r["seeds"]) > 6 else "")
        score = fmt(100 * r["score"], ".2f")
        if r["n"] > 1:
            score += " ± " + fmt(100 * r["score_std"], ".2f")
        exit_layer = fmt(r["avg_exit_layer"], ".2f")
        if pd.notna(r["avg_exit_layer"]) and pd.notna(r["num_layers"]):
            exit_layer += f" / {int(r['num_layers'])}"
        rows.append([r["mechanism"], r["mode"], r["model"], r["params"] or "–", f"{seeds} ({r['n']})", score,
                     fmt(r["latency_ms_p50"], ".2f"), fmt(r["throughput_eps"], ".1f"), fmt(r["speedup"], ".2f", "x"),
                     fmt(r["delta_points"], "+.2f"), exit_layer, fmt(r["avg_token_retention"], ".3f"),
                     fmt(r["flops_reduction"], ".2f", "x"), fmt(r["flops_realisation"], ".2f"),
                     warning_flag(r["latency_warning"])])
    return rows


def warning_flag(text) -> str:
    """Short form of a row's latency warnings for the table (the notes have them in full)."""
    if not isinstance(text, str) or not text:
        return ""
    flags = (["p99 > 5x p50"] if "p99" in text else []) + (["short warm-up"] if "warm-up" in text else [])
    return ", ".join(flags) or "see notes"


def write_tables(agg: pd.DataFrame, metrics: Dict[str, str], notes: List[str], path: str) -> None:
    parts = ["# EAT benchmark report", "",
             "Speed-up = median (p50) batch latency of the static model (mechanism none, mode compute, same task, "
             "split and batch size) / median batch latency of the row; with several rows per config, the median "
             "of their p50s. Δ is the change of the score in points. "
             + ("Rows of the declared harness (eat.bench) show its own speed-up instead: the median of their per-pass "
                "ratios against the first configuration of their run (column speedup_vs), measured on the same "
                "batches. " if "harness_speedup" in agg.columns and agg["harness_speedup"].notna().any() else "") +
             "FLOPs realisation = speed-up / FLOPs reduction (1.0: every FLOP saved became wall-clock time). "
             "Latency warning: the row's p99 was more than 5x its p50, or its warm-up was too short "
             "(the timings of a busy machine; see the notes).", ""]
    for (task, split, bs), group in agg.groupby(["task", "split", "batch_size"], sort=False):
        metric = metrics[task]
        ref = sorted(set(group["reference_model"]) - {""})
        parts += [f"## {task} · {split} · batch size {bs}", "",
                  f"Score: {metric} (×100). Static reference: {', '.join(ref) if ref else 'none in the results'}.", ""]
        header = ["mechanism", "mode", "model", "params", "seeds (n)", f"{metric} (mean ± std)", "latency p50 ms",
                  "throughput ex/s", "speed-up", f"Δ {metric} (pts)", "avg exit layer", "token retention",
                  "FLOPs reduction", "FLOPs realisation", "latency warning"]
        parts += [markdown_table(header, table_rows(group)), ""]
    if notes:
        parts += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    with open(path, "w") as f:
        f.write("\n".join(parts))


# ----------------------------------------------------------------------------------------------- figures
def pareto(latency: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Points no other point beats on both axes (lower latency, higher score)."""
    keep = np.ones(len(latency), dtype=bool)
    for i in range(len(latency)):
        better = (latency <= latency[i]) & (score >= score[i]) & ((latency < latency[i]) | (score > score[i]))
        keep[i] = not better.any()
    return keep


def mechanism_colors(agg: pd.DataFrame) -> Dict[str, object]:
    names = sorted(set(agg["mechanism"] + "/" + agg["mode"]) | {HF_MODEL})
    return {n: f"C{i % 10}" for i, n in enumerate(names)}  # matplotlib's default colour cycle


def color_of(r, colors) -> object:
    return colors[HF_MODEL] if r["model"] == HF_MODEL else colors[f"{r['mechanism']}/{r['mode']}"]


def text_box(t, renderer):
    """The box of an annotation's text alone (its leader line excluded), with a little margin."""
    from matplotlib.text import Text

    t.update_positions(renderer)  # what Annotation.get_window_extent does first
    return Text.get_window_extent(t, renderer).expanded(1.04, 1.15)


def place_labels(fig: Figure, ax, points: List[Tuple[float, float, str]]) -> None:
    """Annotate points without overlaps: each label takes the first of a ring of offsets around its point
    whose box overlaps no label placed before and no other point, and stays inside the axes; a label with no
    free spot goes further out, with a leader line. Measured in display units after the layout is fixed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.execute(fig)  # final axes positions before measuring
        fig.set_layout_engine("none")
    inside = ax.get_window_extent(renderer)
    dots = [ax.transData.transform((x, y)) for x, y, _ in points]
    placed = [ax.get_legend().get_window_extent(renderer)] if ax.get_legend() is not None else []
    rings = [(6, 4), (6, -12), (-6, 4), (-6, -12), (6, 16), (-6, 16), (6, -24), (-6, -24), (18, 28), (-18, 28),
             (18, -36), (-18, -36), (30, 44), (-30, 44), (30, -52), (-30, -52), (40, 62), (-40, -70)]
    order = sorted(range(len(points)), key=lambda i: (dots[i][0], dots[i][1]))
    for i in order:
        x, y, text = points[i]
        best = None
        for dx, dy in rings:
            t = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=7,
                            ha="left" if dx >= 0 else "right", va="bottom", zorder=5,
                            arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.4", "shrinkA": 0, "shrinkB": 4})
            box = text_box(t, renderer)
            clear = (box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y0 >= inside.y0 and box.y1 <= inside.y1
                     and not any(box.overlaps(b) for b in placed)
                     and not any(box.contains(*d) for j, d in enumerate(dots) if j != i))
            if clear:
                best = (t, box)
                break
            t.remove()
        if best is None:  # crowded: the free spot of the axes nearest to the point, with a leader line
            spots = [(fx, fy) for fx in np.linspace(0.01, 0.99, 25) for fy in np.linspace(0.02, 0.95, 24)]
            spots.sort(key=lambda f: (inside.x0 + f[0] * inside.width - dots[i][0]) ** 2
                       + (inside.y0 + f[1] * inside.height - dots[i][1]) ** 2)
            for fx, fy in spots:
                t = ax.annotate(text, (x, y), textcoords="axes fraction", xytext=(fx, fy), fontsize=7,
                                ha="left" if fx < 0.5 else "right", va="bottom", zorder=5,
                                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.4", "shrinkA": 0, "shrinkB": 4})
                box = text_box(t, renderer)
                if (box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y0 >= inside.y0 and box.y1 <= inside.y1
                        and not any(box.overlaps(b) for b in placed)
                        and not any(box.contains(*d) for d in dots)
                        and not box.expanded(1.0, 1.0).contains(*dots[i])):
                    best = (t, box)
                    break
                t.remove()
        if best is None:  # no free spot at all: the first ring, and a warning in the log
            t = ax.annotate(text, (x, y), textcoords="offset points", xytext=rings[0], fontsize=7, zorder=5)
            best = (t, text_box(t, renderer))
            print(f"[eat.report] note: no free space for the label {text!r}; it may overlap", file=sys.stderr)
        placed.append(best[1])


def frontier_figure(task: str, bs: int, data: pd.DataFrame, metric: str, colors, path: str) -> None:
    splits = list(dict.fromkeys(data["split"]))
    fig = Figure(figsize=(8 * len(splits), 6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(splits)))
    labelled = []
    for ax, split in zip(axes, splits):
        d = data[(data["split"] == split) & data["score"].notna() & data["latency_ms_p50_per_example"].notna()]
        x, y = d["latency_ms_p50_per_example"].to_numpy(), 100 * d["score"].to_numpy()
        front = pareto(x, y) if len(d) else np.zeros(0, dtype=bool)
        points = []
        for (_, r), xi, yi, on_front in zip(d.iterrows(), x, y, front):
            ax.scatter(xi, yi, color=color_of(r, colors), s=45, zorder=3)
            if on_front or len(d) <= 12:  # label the Pareto set (every point when there are few)
                points.append((xi, yi, r["label"]))
        if len(d):
            order = np.argsort(x[front])
            ax.plot(x[front][order], y[front][order], "k--", lw=1, zorder=2, label="Pareto set")
            ax.scatter(x[front], y[front], s=140, facecolors="none", edgecolors="k", zorder=4)
            ax.margins(x=0.25, y=0.2)  # room for the labels inside the axes
        else:
            ax.text(0.5, 0.5, "no row with both a score and a latency", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, color="0.35")
        for name, c in colors.items():
            if name in set(d["mechanism"] + "/" + d["mode"]) or (name == HF_MODEL and (d["model"] == HF_MODEL).any()):
                ax.scatter([], [], color=c, label=name)
        ax.set_xlabel("median latency per example (ms): p50 of the batches / batch size")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"{task} · {split} · batch size {bs}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        labelled.append((ax, points))
    for ax, points in labelled:
        place_labels(fig, ax, points)
    save(fig, path)


def ablation_figure(task: str, bs: int, data: pd.DataFrame, metric: str, colors, path: str) -> None:
    """Horizontal bars, one row per config (labels on the y axis, wrapped: long labels never cut a panel)."""
    import textwrap

    splits = list(dict.fromkeys(data["split"]))
    per_split = max(len(data[data["split"] == s]) for s in splits)
    fig = Figure(figsize=(12, len(splits) * (0.42 * per_split + 1.4) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(splits), 2, squeeze=False, sharey="row"))
    fig.suptitle(f"{task} · batch size {bs}: speed-up (median latency) and {metric} per configuration", fontsize=10)
    for (ax_speed, ax_score), split in zip(axes, splits):
        d = data[data["split"] == split]
        pos = np.arange(len(d))[::-1]  # first config on top
        c = [color_of(r, colors) for _, r in d.iterrows()]
        ax_speed.barh(pos, d["speedup"].fillna(0), color=c)
        ax_speed.set_xlabel("speed-up vs static (x)")
        if d["speedup"].notna().any():
            ax_speed.axvline(1.0, color="k", lw=0.8)
        else:  # say why the panel is empty, in the panel
            ax_speed.set_xlim(0, 1)
            ax_speed.text(0.5, 0.5, "no static row (mechanism=none, mode=compute)\nfor this task, split and batch "
                          "size:\nspeed-up is undefined", ha="center", va="center", transform=ax_speed.transAxes,
                          fontsize=9, color="0.35")
        ax_score.barh(pos, 100 * d["score"].fillna(0), xerr=100 * d["score_std"].fillna(0), color=c, capsize=3)
        lo = np.nanmin(100 * d["score"]) if d["score"].notna().any() else 0
        ax_score.set_xlim(max(0.0, lo - 10), None)
        ax_score.set_xlabel(f"{metric} (%)")
        ax_speed.set_yticks(pos, [textwrap.fill(str(lab), 60) for lab in d["label"]], fontsize=7)
        for ax, what in ((ax_speed, "speed-up"), (ax_score, metric)):
            ax.set_title(f"{split}: {what}")
            ax.grid(axis="x", alpha=0.3)
    save(fig, path)


def resolve_dir(output_dir: str, source_csv: str) -> str:
    if not output_dir or os.path.isabs(output_dir):
        return output_dir
    for base in (os.getcwd(), os.path.dirname(source_csv)):
        if os.path.isdir(os.path.join(base, output_dir)):
            return os.path.join(base, output_dir)
    return output_dir


def shown_path(path: str, source_csv: str) -> str:
    """A predictions path as the notes print it: relative to the results CSV's folder, so tables.md is the same in
    every clone and on every machine (an absolute output_dir of another machine is shortened to its last two
    folders and the file name)."""
    if not os.path.isabs(path):
        return path
    rel = os.path.relpath(path, os.path.dirname(source_csv))
    return rel if not rel.startswith("..") else os.path.join("…", *path.split(os.sep)[-3:])


def is_tracked(path: str) -> bool:
    """True when `path` is a file committed to (tracked by) the git repository that holds it."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return False
    done = subprocess.run(["git", "ls-files", "--error-unmatch", os.path.basename(path)], cwd=folder,
                          capture_output=True, text=True)
    return done.returncode == 0


def load_predictions(rows: pd.DataFrame, committed_only: bool = False) -> Tuple[Dict[str, pd.DataFrame], List[str]]:
    """label -> the per-example predictions of the config's rows (all seeds and splits, smallest batch size);
    and the prediction files that were looked for but not found (as `shown_path` prints them). With
    `committed_only`, a file that exists but is not tracked by git counts as missing: the committed report must
    not depend on what happens to lie in a machine's outputs/ folder."""
    series, missing = {}, []
    for label, g in rows.groupby("label", sort=False):
        g = g[g["batch_size"] == g["batch_size"].min()]
        frames = []
        for _, r in g.iterrows():
            path = results.prediction_path(resolve_dir(r["output_dir"], r["source_csv"]), r["split"], r["batch_size"])
            found = bool(r["output_dir"]) and os.path.isfile(path) and (not committed_only or is_tracked(path))
            p = pd.read_csv(path) if found else None
            if p is not None and all(c in p.columns for c in PREDICTION_COLUMNS):
                frames.append(p)
            else:
                missing.append(shown_path(path, r["source_csv"]) if r["output_dir"]
                               else f"(row {r['run_id']} has no output_dir)")
        if frames:
            series[f"{label} (bs {g['batch_size'].iloc[0]})"] = pd.concat(frames, ignore_index=True)
    return series, missing


def prediction_rows(df: pd.DataFrame, task: str, word: str) -> pd.DataFrame:
    """The task's rows whose mechanism uses the plug-in `word` (exit, prune), else all of the task's rows."""
    rows = df[df["task"] == task]
    chosen = rows[rows["mechanism"].map(lambda m: results.uses(m, word))]
    return chosen if len(chosen) else rows


def exit_histogram_figure(task: str, series: Dict[str, pd.DataFrame], path: str) -> None:
    top = int(max(p["exit_layer"].max() for p in series.values()))
    layers = np.arange(1, top + 1)
    fig = Figure(figsize=(max(7.0, 1.1 * top + 3), 4.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(series)
    for k, (label, p) in enumerate(series.items()):
        share = p["exit_layer"].value_counts(normalize=True).reindex(layers, fill_value=0.0)
        ax.bar(layers - 0.4 + width * (k + 0.5), 100 * share.to_numpy(), width=width,
               label=f"{label}, n={len(p)}, mean {p['exit_layer'].mean():.2f}")
    ax.set_xticks(layers)
    ax.set_xlabel("exit layer (layers executed)")
    ax.set_ylabel("examples (%)")
    ax.set_title(f"{task}: exit layers")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    save(fig, path)


def retention_figure(task: str, series: Dict[str, pd.DataFrame], path: str) -> None:
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for k, (label, p) in enumerate(series.items()):
        ratio = p["tokens_final"] / p["tokens_in"].clip(lower=1)
        ax.scatter(p["tokens_in"], ratio, s=8, alpha=0.35, color=f"C{k % 10}")
        means = ratio.groupby(p["tokens_in"]).mean()  # the mean retention at each input length
        ax.plot(means.index, means.to_numpy(), color=f"C{k % 10}", lw=1.5, label=f"{label}, mean {ratio.mean():.3f}")
    ax.set_xlabel("input length (real tokens)")
    ax.set_ylabel("token retention (tokens in the last layer run / input tokens)")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{task}: token retention vs input length")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save(fig, path)


# ----------------------------------------------------------------------------------------------- main
def build_report(paths: List[str], out: str, committed_only: bool = False) -> Dict[str, object]:
    with matplotlib.rc_context(STYLE):
        return _build_report(paths, out, committed_only)


def _build_report(paths: List[str], out: str, committed_only: bool = False) -> Dict[str, object]:
    df = add_labels(read_results(paths))
    agg = aggregate(df)
    metrics = {task: score_metric(rows) for task, rows in df.groupby("task")}
    os.makedirs(out, exist_ok=True)
    colors = mechanism_colors(agg)
    images, notes = [], []
    for (task, bs), data in agg.groupby(["task", "batch_size"], sort=False):
        for kind, draw in (("frontier", frontier_figure), ("ablation", ablation_figure)):
            path = os.path.join(out, f"{kind}_{task}_bs{bs}.png")
            draw(task, bs, data, metrics[task], colors, path)
            images.append(path)
    for task in dict.fromkeys(agg["task"]):
        for kind, word, draw in (("exit_histogram", "exit", exit_histogram_figure),
                                 ("retention", "prune", retention_figure)):
            series, missing = load_predictions(prediction_rows(df, task, word), committed_only)
            if not series:
                where = "committed " if committed_only else ""
                notes.append(f"{kind}_{task}.png skipped: no {where}predictions files were found for task {task} "
                             f"(looked for {len(missing)}, e.g. {missing[0]}, as the results CSV's output_dir column "
                             f"gives it; '…' stands for folders outside the CSV's own), so this figure cannot be drawn "
                             f"from these results.")
                stale = os.path.join(out, f"{kind}_{task}.png")
                if os.path.exists(stale):  # an older figure must not sit beside a note that says it was skipped
                    os.remove(stale)
                continue
            path = os.path.join(out, f"{kind}_{task}.png")
            draw(task, series, path)
            images.append(path)
    for _, r in agg[agg["latency_warning"] != ""].iterrows():
        notes.append(f"latency warning, {r['task']} · {r['split']} · batch size {r['batch_size']} · {r['label']}: "
                     f"{r['latency_warning']}. Speed-ups use medians; the mean and throughput of this row are "
                     f"unreliable (README: timing on a shared machine).")
    write_tables(agg, metrics, notes, os.path.join(out, "tables.md"))
    summary = agg.assign(seeds=agg["seeds"].map(lambda s: " ".join(map(str, s))))
    summary.to_csv(os.path.join(out, "summary.csv"), index=False)
    return {"summary": summary, "images": images, "notes": notes, "tables": os.path.join(out, "tables.md"),
            "agg": agg, "rows": df}


def safe_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", str(text)).strip("_")[:80]


def latency_batches(rows: pd.DataFrame) -> pd.DataFrame:
    """The per-batch timings (latency_batches_bs<N>.csv in each row's run folder) of the rows' configs."""
    frames, seen = [], set()
    for _, r in rows.iterrows():
        path = os.path.join(resolve_dir(r["output_dir"], r["source_csv"]), f"latency_batches_bs{r['batch_size']}.csv")
        if not r["output_dir"] or path in seen or not os.path.isfile(path):
            continue
        seen.add(path)
        p = pd.read_csv(path)
        if {"batch_idx", "ms"} <= set(p.columns):
            frames.append(p.assign(label=r["label"], task=r["task"], batch_size=r["batch_size"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def wandb_panels(report: Dict[str, object]) -> Dict[str, object]:
    """The charts a user expects on opening the project, as W&B custom charts (wandb.plot.* over wandb.Table):
    they are made offline and appear as panels once the run is synced. Keys: frontier/<task>_bs<N> (score vs
    median latency per example), ablation/<task>_bs<N> (speed-up per config), exit_layers/<task>/<config>
    (histogram), token_retention/<task> (retention vs input length), latency_per_batch/<task>_bs<N>."""
    import wandb

    agg, rows = report["agg"], report["rows"]
    panels: Dict[str, object] = {}
    for (task, bs), d in agg.groupby(["task", "batch_size"], sort=False):
        t = wandb.Table(dataframe=d[["label", "split", "latency_ms_p50_per_example", "score", "speedup"]]
                        .assign(score=100 * d["score"]).reset_index(drop=True))
        panels[f"frontier/{task}_bs{bs}"] = wandb.plot.scatter(
            t, "latency_ms_p50_per_example", "score", title=f"{task} bs={bs}: score (%) vs median ms per example")
        panels[f"ablation/{task}_bs{bs}"] = wandb.plot.bar(
            t, "label", "speedup", title=f"{task} bs={bs}: speed-up vs static (median latency)")
    for task in dict.fromkeys(agg["task"]):
        series, _ = load_predictions(prediction_rows(rows, task, "exit"))
        for label, p in series.items():
            t = wandb.Table(dataframe=p[["exit_layer"]].astype(float))
            panels[f"exit_layers/{task}/{safe_key(label)}"] = wandb.plot.histogram(
                t, "exit_layer", title=f"{task}: exit layers, {label}")
        series, _ = load_predictions(prediction_rows(rows, task, "prune"))
        if series:
            ret = pd.concat([p.assign(config=label, retention=p["tokens_final"] / p["tokens_in"].clip(lower=1))
                             [["config", "tokens_in", "retention"]] for label, p in series.items()], ignore_index=True)
            panels[f"token_retention/{task}"] = wandb.plot.scatter(
                wandb.Table(dataframe=ret), "tokens_in", "retention", title=f"{task}: token retention vs input length")
    lat = latency_batches(rows)
    if len(lat):
        for (task, bs), d in lat.groupby(["task", "batch_size"], sort=False):
            t = wandb.Table(dataframe=d[["label", "batch_idx", "ms"]].reset_index(drop=True))
            panels[f"latency_per_batch/{task}_bs{bs}"] = wandb.plot.line(
                t, "batch_idx", "ms", stroke="label", title=f"{task} bs={bs}: latency per batch (ms)")
    return panels


def log_to_wandb(report: Dict[str, object], project: str) -> Optional[str]:
    """Log the charts, the summary table, every figure and tables.md to one W&B run; returns its folder."""
    try:
        import wandb
    except ImportError:
        print("[eat.report] --wandb: wandb is not installed; skipped", file=sys.stderr)
        return None
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=project, job_type="report", dir=os.path.dirname(report["tables"]))
    try:
        run.log({"summary": wandb.Table(dataframe=report["summary"].astype(str)), **wandb_panels(report),
                 **{os.path.splitext(os.path.basename(p))[0]: wandb.Image(p) for p in report["images"]}})
        run.save(report["tables"], base_path=os.path.dirname(report["tables"]), policy="now")
        return run.dir
    finally:
        from eat.wandb_logger import finish

        finish()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eat.report", description=__doc__.split("\n")[0])
    parser.add_argument("--results", action="append", required=True, metavar="CSV",
                        help="results table (eat.results); repeat to merge several")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for tables.md and the figures")
    parser.add_argument("--committed-only", action="store_true",
                        help="use only predictions files tracked by git (make report: the committed report must "
                             "be reproducible in any clone)")
    parser.add_argument("--wandb", action="store_true", help="also log tables and figures to W&B (offline unless "
                                                             "WANDB_MODE says otherwise)")
    parser.add_argument("--wandb-project", default="eat-report")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.results, args.out, args.committed_only)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in report["notes"]:
        print(f"[eat.report] note: {note}", file=sys.stderr)
    print(f"[eat.report] wrote {report['tables']} and {len(report['images'])} figures to {args.out}")
    if args.wandb:
        where = log_to_wandb(report, args.wandb_project)
        if where and os.environ.get("WANDB_MODE", "offline") == "offline":
            print(f"[eat.report] W&B run (offline) in {os.path.dirname(where)}: upload with `wandb login` then "
                  f"`wandb sync {os.path.dirname(where)}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
