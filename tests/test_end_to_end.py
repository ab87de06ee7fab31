"""The real loop (Hydra configs -> Lightning fit -> evaluation -> results table) on small sizes."""
from __future__ import annotations

import csv
import glob
import json
import re
from pathlib import Path

import pytest

from eat.results import COLUMNS, read_rows
from eat.runner import run
from tests.conftest import GLUE_DIR, ROOT, compose_cfg, needs_glue, run_script, tiny_overrides

MECHANISMS = ["none", "prune", "sparse", "exit", "prune+sparse", "prune+exit", "sparse+exit", "prune+sparse+exit"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@needs_glue
def test_train_writes_every_documented_column_and_predictions(tmp_path):
    cfg = compose_cfg(tiny_overrides(tmp_path, "mechanism=prune+sparse+exit", "mechanism.exit.threshold=0.75"))
    rows = run(cfg)
    table = read_rows(str(tmp_path / "results.csv"))
    assert len(table) == len(rows) == 2  # one row per (split, batch size): validation x {1, 8}
    with open(tmp_path / "results.csv") as f:
        assert f.readline().strip().split(",") == COLUMNS
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`([a-z_0-9]+)`", readme))
    assert not [c for c in COLUMNS if c not in documented], "every results column is documented in README"
    always = ["run_id", "timestamp", "git_sha", "config_hash", "task", "split", "model", "mechanism", "mode", "seed",
              "batch_size", "device", "threads", "n_examples", "accuracy", "latency_ms_p50", "throughput_eps",
              "avg_exit_layer", "num_layers", "avg_token_retention", "gflops_per_example", "mechanism_params"]
    for row in table:
        assert all(row[c] != "" for c in always), {c: row[c] for c in always if row[c] == ""}
        assert row["f1"] == row["mcc"] == row["pearson"] == ""  # not SST-2 metrics
        assert int(row["n_examples"]) == 24 and 0.0 <= float(row["accuracy"]) <= 1.0
        params = json.loads(row["mechanism_params"])  # the settings that ran, overrides included
        assert params["prune"]["keep_ratios"] == list(cfg.mechanism.prune.keep_ratios)
        assert params["exit"]["threshold"] == 0.75 and params["sparse"]["window"] == 32
    for bs in (1, 8):
        preds = read_csv(tmp_path / "run" / f"predictions_validation_bs{bs}.csv")
        assert len(preds) == 24
        assert list(preds[0]) == ["idx", "label", "pred", "exit_layer", "tokens_in", "tokens_final", "gflops",
                                  "gflops_static"]
        assert [int(p["idx"]) for p in preds] == list(range(24))
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()
    assert (tmp_path / "run" / "csv" / "metrics.csv").exists()  # training curves


@needs_glue
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_every_mechanism_trains_and_evaluates(tmp_path, mechanism):
    rows = run(compose_cfg(tiny_overrides(tmp_path, f"mechanism={mechanism}", "eval_batch_sizes=[4]")))
    assert [r["mechanism"] for r in rows] == [mechanism]
    r = rows[0]
    assert r["n_examples"] == 24 and 1 <= r["avg_exit_layer"] <= 4
    if "prune" in mechanism:
        assert r["avg_token_retention"] < 1.0
    else:
        assert r["avg_token_retention"] == 1.0


@needs_glue
def test_wandb_offline_run_has_the_final_metrics(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the project's own default must make it offline
    run(compose_cfg(tiny_overrides(tmp_path, "logger=wandb", "eval_batch_sizes=[4]")))
    runs = glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*"))
    assert len(runs) == 1
    tables = list(Path(runs[0], "files", "media", "table").glob("results_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    logged = dict(zip(table["columns"], table["data"][0]))
    row = read_rows(str(tmp_path / "results.csv"))[0]
    assert logged["accuracy"] == pytest.approx(float(row["accuracy"]), abs=1e-6)
    assert logged["config_hash"] == row["config_hash"] and logged["batch_size"] == 4
    assert list(Path(runs[0]).glob("run-*.wandb"))  # the run log that `wandb sync` uploads

    # Read the run file back (what `wandb sync` would upload): the per-batch latency table and its line chart.
    from eat.wandb_logger import read_offline_run

    logged_run = read_offline_run(str(next(Path(runs[0]).glob("run-*.wandb"))))
    latency = logged_run["history"]
    assert latency["latency_batches/bs4/_type"] == "table-file"
    batches = read_csv(tmp_path / "run" / "latency_batches_bs4.csv")
    assert latency["latency_batches/bs4/nrows"] == len(batches) == 6  # 24 rows / bs 4
    chart = logged_run["config"]["_wandb/visualize/latency_per_batch/bs4"]
    assert chart["panel_config"]["panelDefId"] == "wandb/line/v0"
    assert chart["panel_config"]["fieldSettings"]["x"] == "batch_idx"
    table = json.loads(Path(runs[0], "files", latency["latency_batches/bs4/path"]).read_text())
    ms = [r[table["columns"].index("ms")] for r in table["data"]]
    assert ms == pytest.approx([float(r["ms"]) for r in batches], rel=1e-6)


@needs_glue
def test_eval_script_on_a_checkpoint_agrees_across_batch_sizes(tmp_path):
    train = run_script("train.py", tiny_overrides(tmp_path, "mechanism=prune+sparse+exit", "eval_batch_sizes=[4]",
                                                  "data.max_eval_samples=80"), tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    out = tmp_path / "eval"
    ev = run_script("eval.py", tiny_overrides(tmp_path, "mechanism=prune+sparse+exit", f"ckpt_path={ckpt}",
                                              "eval_batch_sizes=[1,64]", "data.max_eval_samples=80",
                                              "mechanism.exit.criterion=patience", "mechanism.exit.patience=1",
                                              f"output_dir={out}"), tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    a, b = read_csv(out / "predictions_validation_bs1.csv"), read_csv(out / "predictions_validation_bs64.csv")
    assert len(a) == len(b) == 80
    for x, y in zip(a, b):
        assert (x["idx"], x["pred"], x["exit_layer"], x["tokens_final"]) == \
               (y["idx"], y["pred"], y["exit_layer"], y["tokens_final"])
    assert len({x["exit_layer"] for x in a}) > 1  # exits really fired at different layers
    rows = read_rows(str(tmp_path / "results.csv"))
    assert [r["batch_size"] for r in rows[-2:]] == ["1", "64"] and rows[-1]["ckpt_path"] == str(ckpt)


@needs_glue
def test_batch_invariance_on_real_sst2_dev_with_minilm(tmp_path):
    """prune+sparse+exit active on the pretrained backbone: every example of the full SST-2 dev set gets
    the same prediction, exit layer and kept-token count at batch size 1 and 64."""
    overrides = ["model=minilm_l6", "train=false", "mechanism=prune+sparse+exit", "mechanism.exit.criterion=patience",
                 "mechanism.exit.patience=1", "eval_batch_sizes=[1,64]", f"data.dir={GLUE_DIR}",
                 f"output_dir={tmp_path / 'run'}", f"results_csv={tmp_path / 'results.csv'}",
                 "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "trainer.devices=1"]
    rows = run(compose_cfg(overrides))
    assert [r["n_examples"] for r in rows] == [872, 872]
    a = read_csv(tmp_path / "run" / "predictions_validation_bs1.csv")
    b = read_csv(tmp_path / "run" / "predictions_validation_bs64.csv")
    key = lambda r: (r["idx"], r["pred"], r["exit_layer"], r["tokens_in"], r["tokens_final"])  # noqa: E731
    assert [key(r) for r in a] == [key(r) for r in b]
    assert len({r["exit_layer"] for r in a}) > 1 and any(r["tokens_final"] < r["tokens_in"] for r in a)
    assert rows[0]["avg_exit_layer"] == rows[1]["avg_exit_layer"]
