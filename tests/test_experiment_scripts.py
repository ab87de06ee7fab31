"""The benchmark scripts under experiments/ run end to end on tiny sizes and write what RESULTS.md reads."""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_long_sequence_study_writes_one_row_per_length_and_mechanism(tmp_path):
    out = tmp_path / "long.csv"
    assert load("bench_long_sequences").main(["--lengths", "64,640", "--window", "32", "--repeats", "1",
                                              "--device", "cpu", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    model = {(int(r["length"]), r["mechanism"]): r for r in rows if not r["mechanism"].startswith("attention:")}
    assert set(model) == {(L, m) for L in (64, 640) for m in ("none", "sparse", "prune", "prune+sparse")}
    assert all(r["device"] == "cpu" for r in rows)
    gflops = {k: float(r["gflops"]) for k, r in model.items()}
    for L in (64, 640):
        assert float(model[(L, "none")]["speedup_vs_dense"]) == 1.0
        assert int(model[(L, "prune")]["tokens_final"]) < L and gflops[(L, "prune")] < gflops[(L, "none")]
    # below blocked_min_length (512) local attention runs as a dense-masked kernel, at dense cost; above it the
    # blocked kernel does O(L x window) work
    assert gflops[(64, "sparse")] == gflops[(64, "none")]
    assert gflops[(640, "sparse")] < gflops[(640, "none")]
    assert load("plot_long_sequences").main(str(out), str(tmp_path / "report")) == 0
    assert (tmp_path / "report" / "long_sequences.png").stat().st_size > 0
