"""`python -m eat.report` on a small synthetic results table with known numbers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from eat import report, results

ROOT = Path(__file__).resolve().parents[1]
PREDICTION_COLUMNS = ["idx", "label", "pred", "exit_layer", "tokens_in", "tokens_final", "gflops", "gflops_static"]


def params(**kw) -> str:
    base = {"mode": kw.pop("mode", "compute"), "prune": None, "sparse": None, "exit": None}
    return json.dumps({**base, **kw}, sort_keys=True)


def row(run, mechanism, mode, seed, acc, lat_per_ex, bs=1, model="minilm_l6", task="sst2", prm=None, **extra):
    """One results row; latency per example `lat_per_ex` ms (p50 of a batch = bs * that)."""
    return {"run_id": run, "task": task, "split": "validation", "model": model, "mechanism": mechanism, "mode": mode,
            "seed": seed, "batch_size": bs, "n_examples": 100, "accuracy": acc, "latency_ms_p50": lat_per_ex * bs,
            "latency_ms_mean": lat_per_ex * bs, "latency_ms_per_example": lat_per_ex,
            "throughput_eps": 1e3 / lat_per_ex, "num_layers": 6, "mechanism_params": prm or params(mode=mode),
            **extra}


def write_predictions(out_dir: Path, bs: int, exit_layers, tokens_in, tokens_final) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(exit_layers)
    pd.DataFrame({"idx": range(n), "label": [i % 2 for i in range(n)], "pred": [0] * n, "exit_layer": exit_layers,
                  "tokens_in": tokens_in, "tokens_final": tokens_final, "gflops": [0.5] * n,
                  "gflops_static": [1.0] * n}, columns=PREDICTION_COLUMNS).to_csv(
        out_dir / f"predictions_validation_bs{bs}.csv", index=False)


def make_synthetic(tmp_path: Path) -> Path:
    """Two results files (merged by the report). sst2 at batch sizes 1 and 8 with predictions files; rte
    without any (its per-example figures are skipped with a note)."""
    runs = tmp_path / "runs"
    exit09 = params(exit={"threshold": 0.9, "criterion": "confidence"})
    exit08 = params(exit={"threshold": 0.8, "criterion": "confidence"})
    prune = params(prune={"keep_ratios": [0.7, 0.7], "layers": [2, 4]})
    prune_mask = params(mode="mask", prune={"keep_ratios": [0.7, 0.7], "layers": [2, 4]})
    a = [  # bs 1: static 10 ms/example, accuracy 0.90 / 0.92 (mean 91.00 ± 1.41)
        row("s1", "none", "compute", 1, 0.90, 10.0, output_dir=str(runs / "s1")),
        row("s2", "none", "compute", 2, 0.92, 10.0, output_dir=str(runs / "s2")),
        row("p1", "prune", "compute", 1, 0.89, 5.0, prm=prune, avg_token_retention=0.55, flops_reduction=1.6,
            avg_exit_layer=6, output_dir=str(runs / "p1")),
        row("p2", "prune", "compute", 2, 0.88, 5.0, prm=prune, avg_token_retention=0.55, flops_reduction=1.6,
            avg_exit_layer=6, output_dir=str(runs / "p2")),
        row("pm", "prune", "mask", 1, 0.885, 12.5, prm=prune_mask, flops_reduction=1.0, output_dir=str(runs / "pm")),
        row("e9", "exit", "compute", 1, 0.91, 8.0, prm=exit09, avg_exit_layer=4.5, flops_reduction=1.3,
            output_dir=str(runs / "e9")),
        row("e8", "exit", "compute", 1, 0.85, 4.0, prm=exit08, avg_exit_layer=2.5, flops_reduction=2.2,
            output_dir=str(runs / "e8")),
        row("hf", "none", "compute", 0, 0.91, 20.0, model="hf_static"),
    ]
    b = [  # bs 8 of the same runs (another results file): static 2 ms/example
        row("s1", "none", "compute", 1, 0.90, 2.0, bs=8, output_dir=str(runs / "s1")),
        row("p1", "prune", "compute", 1, 0.89, 1.6, bs=8, prm=prune, flops_reduction=1.6, output_dir=str(runs / "p1")),
        row("e9", "exit", "compute", 1, 0.91, 1.0, bs=8, prm=exit09, flops_reduction=1.3, output_dir=str(runs / "e9")),
        row("r1", "none", "compute", 1, 0.60, 3.0, task="rte", output_dir=str(runs / "nowhere")),
        row("r2", "prune", "compute", 1, 0.58, 2.0, task="rte", prm=prune, output_dir=str(runs / "nowhere")),
    ]
    results.append_rows(str(tmp_path / "results_a.csv"), a)
    results.append_rows(str(tmp_path / "results_b.csv"), b)
    lengths = [10, 20, 30, 40, 50, 60]
    for bs in (1, 8):
        write_predictions(runs / "s1", bs, [6] * 6, lengths, lengths)
        write_predictions(runs / "p1", bs, [6] * 6, lengths, [5, 9, 14, 18, 23, 27])
        write_predictions(runs / "e9", bs, [2, 2, 4, 6, 6, 6], lengths, lengths)
    write_predictions(runs / "e8", 1, [1, 2, 2, 2, 3, 6], lengths, lengths)
    for name, ms in (("s1", 10.0), ("e9", 8.0)):  # per-batch timings, as LatencyCallback writes them
        pd.DataFrame({"dataloader_idx": 0, "batch_idx": range(6), "batch_size": 1, "tokens": lengths,
                      "padded_length": lengths, "ms": [ms + i for i in range(6)], "warmup": [True] + [False] * 5}
                     ).to_csv(runs / name / "latency_batches_bs1.csv", index=False)
    return tmp_path


@pytest.fixture
def synthetic(tmp_path):
    return make_synthetic(tmp_path)


def table_lines(md: str, task: str, bs: int):
    """The data rows of the markdown table of (task, validation, bs), as lists of cells."""
    section = md.split(f"## {task} · validation · batch size {bs}\n")[1].split("\n## ")[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[1:]]


def find(rows, **match):
    hits = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(hits) == 1, (match, rows)
    return hits[0]


EXPECTED_PNGS = ["frontier_sst2_bs1.png", "frontier_sst2_bs8.png", "ablation_sst2_bs1.png", "ablation_sst2_bs8.png",
                 "exit_histogram_sst2.png", "retention_sst2.png", "frontier_rte_bs1.png", "ablation_rte_bs1.png"]


def test_report_tables_and_figures(synthetic, capsys):
    out = synthetic / "report"
    rc = report.main(["--results", str(synthetic / "results_a.csv"), "--results", str(synthetic / "results_b.csv"),
                      "--out", str(out)])
    assert rc == 0
    md = (out / "tables.md").read_text()

    bs1 = table_lines(md, "sst2", 1)
    assert len(bs1) == 6  # static, hf, prune compute, prune mask, exit 0.8, exit 0.9 (seeds grouped)
    static = find(bs1, mechanism="none", model="minilm_l6")
    assert static["seeds (n)"] == "1,2 (2)"
    assert static["accuracy (mean ± std)"] == "91.00 ± 1.41"
    assert static["speed-up"] == "1.00x" and static["Δ accuracy (pts)"] == "+0.00"
    assert static["latency p50 ms"] == "10.00" and static["throughput ex/s"] == "100.0"

    pr = find(bs1, mechanism="prune", mode="compute")
    assert pr["seeds (n)"] == "1,2 (2)"
    assert pr["accuracy (mean ± std)"] == "88.50 ± 0.71"
    assert pr["speed-up"] == "2.00x"  # 10 / 5
    assert pr["Δ accuracy (pts)"] == "-2.50"  # 88.5 - 91.0
    assert pr["token retention"] == "0.550"
    assert pr["FLOPs reduction"] == "1.60x"
    assert pr["FLOPs realisation"] == "1.25"  # 2.00 / 1.60
    assert pr["avg exit layer"] == "6.00 / 6"

    pm = find(bs1, mechanism="prune", mode="mask")
    assert pm["speed-up"] == "0.80x" and pm["FLOPs realisation"] == "0.80"

    # The threshold sweep: two configs, told apart by the parameter that varies.
    e8 = find(bs1, mechanism="exit", params="exit.threshold=0.8")
    e9 = find(bs1, mechanism="exit", params="exit.threshold=0.9")
    assert e8["speed-up"] == "2.50x" and e8["Δ accuracy (pts)"] == "-6.00" and e8["avg exit layer"] == "2.50 / 6"
    assert e9["speed-up"] == "1.25x" and e9["Δ accuracy (pts)"] == "+0.00"
    assert e9["accuracy (mean ± std)"] == "91.00"  # one row: no std

    hf = find(bs1, model="hf_static")
    assert hf["speed-up"] == "0.50x"  # against our static model, not itself
    assert hf["FLOPs reduction"] == "–"

    bs8 = table_lines(md, "sst2", 8)
    assert find(bs8, mechanism="prune")["speed-up"] == "1.25x"  # 2.0 / 1.6
    assert find(bs8, mechanism="exit")["speed-up"] == "2.00x"
    assert find(table_lines(md, "rte", 1), mechanism="prune")["Δ accuracy (pts)"] == "-2.00"

    for name in EXPECTED_PNGS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not (out / "exit_histogram_rte.png").exists()
    assert "exit_histogram_rte.png skipped" in md and "retention_rte.png skipped" in md
    assert "skipped" in capsys.readouterr().err
    for name in EXPECTED_PNGS:
        img = matplotlib.image.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 0.01, f"{name} is blank"

    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 6 + 3 + 2
    exit8 = summary[(summary["mechanism"] == "exit") & (summary["params"] == "exit.threshold=0.8")]
    assert exit8["speedup"].item() == pytest.approx(2.5)


def test_pareto():
    lat = np.array([1.0, 2.0, 3.0, 2.5, 1.0])
    acc = np.array([80.0, 85.0, 90.0, 84.0, 79.0])
    assert report.pareto(lat, acc).tolist() == [True, True, True, False, False]


def test_report_as_a_module_with_wandb(synthetic):
    """`python -m eat.report ... --wandb` in its own process: the tables, and an offline W&B run (in the
    output folder) holding the table, every figure and tables.md."""
    out = synthetic / "cli"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(ROOT), WANDB_SILENT="true", WANDB_ERROR_REPORTING="false")  # no WANDB_MODE: offline
    done = subprocess.run([sys.executable, "-m", "eat.report", "--results", str(synthetic / "results_a.csv"),
                           "--out", str(out), "--wandb"], cwd=synthetic, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    md = (out / "tables.md").read_text()
    assert find(table_lines(md, "sst2", 1), mechanism="prune", mode="compute")["speed-up"] == "2.00x"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(["frontier_sst2_bs1.png", "ablation_sst2_bs1.png", "exit_histogram_sst2.png",
                           "retention_sst2.png"])

    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((out / "wandb").iterdir()) if (out / "wandb").exists() else "no wandb folder"
    files = runs[0] / "files"
    logged = {p.name.split("_0_")[0] for p in (files / "media" / "images").glob("*.png")}
    assert logged == {p[:-4] for p in pngs}
    assert list((files / "media" / "table").glob("summary_*.table.json"))
    assert (files / "tables.md").read_text() == md

    # The dashboard panels, read back from the run file that `wandb sync` uploads: one W&B custom chart per
    # view (frontier, ablation, exit-layer histograms, token retention, latency per batch), each over a table.
    from eat.wandb_logger import read_offline_run

    logged_run = read_offline_run(str(next(runs[0].glob("run-*.wandb"))))
    panels = {k.split("_wandb/visualize/")[1]: v["panel_config"]["panelDefId"]
              for k, v in logged_run["config"].items() if k.startswith("_wandb/visualize/")}
    assert panels["frontier/sst2_bs1"] == "wandb/scatter/v0"
    assert panels["ablation/sst2_bs1"] == "wandb/bar/v0"
    assert panels["token_retention/sst2"] == "wandb/scatter/v0"
    assert panels["latency_per_batch/sst2_bs1"] == "wandb/line/v0"
    hists = sorted(k for k, v in panels.items() if k.startswith("exit_layers/sst2/"))
    assert len(hists) == 2 and all(panels[k] == "wandb/histogram/v0" for k in hists)  # thresholds 0.8 and 0.9
    history = logged_run["history"]
    frontier = json.loads((files / history["frontier/sst2_bs1_table/path"]).read_text())
    points = {r[frontier["columns"].index("label")]: r for r in frontier["data"]}
    prune = points["prune/compute"]
    assert prune[frontier["columns"].index("speedup")] == pytest.approx(2.0)
    assert prune[frontier["columns"].index("latency_ms_p50_per_example")] == pytest.approx(5.0)
    latency = json.loads((files / history["latency_per_batch/sst2_bs1_table/path"]).read_text())
    assert len(latency["data"]) == 12  # 6 batches of each of the two runs that have timings


def test_report_labels_medians_sorting_warnings_and_determinism(tmp_path):
    """Calibrated and uncalibrated rows at one threshold get different labels (a setting present in one row and
    absent in the other); thresholds sort by value (0.9 before 0.95); speed-ups use medians (p50) even when the
    means disagree; a latency warning reaches the table and the notes; two runs are byte-identical."""
    cal = params(exit={"threshold": 0.9, "calibration_split": "train", "temperatures": [0.8, 0.9]})
    rows = [row("s", "none", "compute", 1, 0.90, 10.0, latency_ms_mean=50.0),
            row("a", "exit", "compute", 1, 0.91, 5.0, prm=params(exit={"threshold": 0.95}), latency_ms_mean=90.0,
                latency_warning="p99 90.0 ms > 5x p50 5.0 ms: stalled batches"),
            row("b", "exit", "compute", 1, 0.89, 4.0, prm=params(exit={"threshold": 0.9})),
            row("c", "exit", "compute", 1, 0.92, 4.5, prm=cal)]
    results.append_rows(str(tmp_path / "r.csv"), rows)
    for out in ("x", "y"):
        assert report.main(["--results", str(tmp_path / "r.csv"), "--out", str(tmp_path / out)]) == 0
    table = table_lines((tmp_path / "x" / "tables.md").read_text(), "sst2", 1)
    labels = [r["params"] for r in table if r["mechanism"] == "exit"]
    assert len(set(labels)) == 3, labels
    assert [lab.split(",")[0] for lab in labels] == ["exit.threshold=0.9", "exit.threshold=0.9",
                                                     "exit.threshold=0.95"], labels
    warned = find(table, params=next(lab for lab in labels if "0.95" in lab))
    assert warned["speed-up"] == "2.00x"  # 10 / 5 from the medians; the means (50 / 90) would say 0.56x
    assert warned["latency warning"] == "p99 > 5x p50"
    assert "stalled batches" in (tmp_path / "x" / "tables.md").read_text()
    for f in sorted((tmp_path / "x").iterdir()):
        assert f.read_bytes() == (tmp_path / "y" / f.name).read_bytes(), f.name


def test_missing_columns_and_files_fail_with_the_file_named(synthetic, capsys):
    bad = synthetic / "bad.csv"
    pd.read_csv(synthetic / "results_a.csv").drop(columns=["latency_ms_per_example", "mechanism"]).to_csv(bad,
                                                                                                       index=False)
    rc = report.main(["--results", str(synthetic / "results_a.csv"), "--results", str(bad),
                      "--out", str(synthetic / "r")])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(bad) in err and "mechanism" in err and "latency_ms_per_example" in err
    assert not (synthetic / "r" / "tables.md").exists()

    missing = synthetic / "nope.csv"
    assert report.main(["--results", str(missing), "--out", str(synthetic / "r")]) == 2
    assert str(missing) in capsys.readouterr().err

    done = subprocess.run([sys.executable, "-m", "eat.report", "--results", str(bad), "--out", str(synthetic / "r")],
                          cwd=synthetic, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and str(bad) in done.stderr and "lacks required columns" in done.stderr


def test_committed_only_reports_are_the_same_in_every_clone(tmp_path):
    """`make report` (--committed-only) draws per-example figures only from predictions files git tracks, and its
    notes name files relative to the results CSV: two clones at different paths, one of which has an untracked
    predictions file lying around, write byte-identical reports; a stale figure is removed, not kept."""
    outs = []
    for name, stray in (("clone_a", False), ("elsewhere/clone_b", True)):
        repo = tmp_path / name
        (repo / "results").mkdir(parents=True)
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        exit09 = params(exit={"threshold": 0.9})
        results.append_rows(str(repo / "results" / "r.csv"), [
            row("s", "none", "compute", 1, 0.90, 10.0, output_dir="runs/s"),
            row("e", "exit", "compute", 1, 0.91, 5.0, prm=exit09, avg_exit_layer=3.0, output_dir="/gone/machine/runs/e")])
        if stray:  # an untracked predictions file next to the CSV (a run's outputs/): must not be used
            write_predictions(repo / "results" / "runs" / "s", 1, [6, 6], [10, 12], [10, 12])
        out = repo / "report"
        out.mkdir()
        (out / "exit_histogram_sst2.png").write_bytes(b"stale")
        assert report.main(["--committed-only", "--results", str(repo / "results" / "r.csv"), "--out", str(out)]) == 0
        outs.append(out)
        assert not (out / "exit_histogram_sst2.png").exists()
        md = (out / "tables.md").read_text()
        assert "exit_histogram_sst2.png skipped: no committed predictions files" in md
        assert str(tmp_path) not in md and "/gone/machine" not in md
    for f in sorted(outs[0].iterdir()):
        assert f.read_bytes() == (outs[1] / f.name).read_bytes(), f.name


def test_the_report_reads_the_schema_of_eat_results():
    """report.py names the columns it needs; each must exist in the one schema (results.COLUMNS), and the
    mechanism test is by plug-in, not by substring."""
    assert set(report.REQUIRED + report.OPTIONAL_NUMERIC + report.NUMERIC) <= set(results.COLUMNS)
    assert set(report.PREDICTION_COLUMNS) <= set(results.PREDICTION_FIELDS)
    assert results.uses("prune+sparse+exit", "exit") and not results.uses("prune+sparse", "exit")
    assert not results.uses("none", "exit") and results.uses("merge", "merge")
