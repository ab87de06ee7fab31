"""The benchmark scripts under experiments/ run end to end on tiny sizes and write what RESULTS.md reads."""
from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path
import yaml

from tests.conftest import GLUE_DIR, compose_cfg, needs_glue, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_csv(path, cols, rows):
    """A results-like CSV: the header `cols`, then `rows`."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows(rows)


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


def test_trained_combinations_table_compares_each_cpu_row_with_the_static_run_and_the_gpu_row(tmp_path, capsys):
    def write(path, rows):
        cols = ["mechanism", "mode", "seed", "batch_size", "accuracy", "avg_exit_layer", "avg_token_retention",
                "flops_reduction"]
        write_csv(path, cols, rows)

    write(tmp_path / "static.csv", [["none", "compute", 42, 1, 0.5, 6, 1, 1], ["none", "compute", 42, 32, 0.8, 6, 1, 1],
                                    ["none", "compute", 43, 32, 0.1, 6, 1, 1]])
    write(tmp_path / "cpu.csv", [["exit", "compute", 42, 32, 0.79, 2.5, 1, 2.0],
                                 ["exit", "mask", 42, 32, 0.2, 6, 1, 1]])
    write(tmp_path / "gpu.csv", [["exit", "compute", 42, 32, 0.81, 2.4, 1, 2.1]])
    args = ["--cpu", str(tmp_path / "cpu.csv"), "--static", str(tmp_path / "static.csv"),
            "--gpu", str(tmp_path / "gpu.csv"), "--out", str(tmp_path / "t.md")]
    assert load("table_trained_combos").main(args) == 0
    rows = {line.split(" | ")[0].lstrip("| "): line for line in (tmp_path / "t.md").read_text().splitlines()}
    assert "Δ vs static 80.00" in rows["trained and evaluated with"]
    assert rows["exit"] == "| exit | 79.00 | -1.00 | 2.50 | 1.000 | 2.00x | 81.00 |"  # the mode=mask row is ignored
    assert rows["sparse"].startswith("| sparse | (not run) |")
    # no static row for the seed: one clear line on stderr, exit code 2
    assert load("table_trained_combos").main(args[:6] + ["--seed", "7"]) == 2
    assert "no mechanism=none" in capsys.readouterr().err
    # a missing file or a CSV without the results columns: named, exit code 2, no table written
    (tmp_path / "t.md").unlink()
    assert load("table_trained_combos").main(args[:2] + ["--static", str(tmp_path / "nope.csv")] + args[4:]) == 2
    assert "nope.csv: no such results file" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("mechanism,seed\nnone,42\n")
    assert load("table_trained_combos").main(args[:4] + ["--gpu", str(tmp_path / "bad.csv")] + args[6:]) == 2
    assert "bad.csv: missing columns ['mode'," in capsys.readouterr().err
    assert not (tmp_path / "t.md").exists()


def test_headline_table_aggregates_seeds_and_calls_small_differences_no_difference(tmp_path, capsys):
    cols = ["harness", "speedup", "speedup_min", "speedup_max", "speedup_vs", "output_dir", "seed", "batch_size",
            "accuracy", "n_examples", "operating_point_source", "latency_ms_per_example", "avg_exit_layer", "mechanism"]

    def row(label, seed, bs, acc, speed, src="manual", harness="eat.bench"):
        return [harness, speed, speed * 0.9, speed * 1.1, "static", f"predictions/seed{seed}/{label}", seed, bs, acc,
                872, src, 1.0 / speed, 6 if label == "static" else 3, "exit"]

    rows = [row("static", s, 1, 0.88, 1.0) for s in (42, 43)]
    rows += [row("eat", 42, 1, 0.88 + 2 / 872, 1.9, "selection"), row("eat", 43, 1, 0.88 - 3 / 872, 1.7, "selection")]
    rows += [row("static", s, 32, 0.88, 1.0) for s in (42, 43)]
    rows += [row("eat", s, 32, 0.88 - 10 / 872, 1.5, "selection") for s in (42, 43)]
    path = tmp_path / "h.csv"
    write_csv(path, cols, rows)
    out = tmp_path / "h.md"
    assert load("table_headline").main(["--results", str(path), "--out", str(out), "--targets", "1=1.8,32=1.6"]) == 0
    text = out.read_text()
    bs1, bs32 = text.split("### batch size 32")
    eat1 = next(ln for ln in bs1.splitlines() if ln.startswith("| eat |"))
    assert "no measurable difference (+2, -3 examples)" in eat1 and "| 1.80x |" in eat1  # median of 1.9 and 1.7
    assert "1.90x [1.71-2.09]" in eat1 and "selection" in eat1
    assert "met (accuracy)" in bs1 and "met (speed)" in bs1
    eat32 = next(ln for ln in bs32.splitlines() if ln.startswith("| eat |"))
    assert "-1.15 points (-10, -10 examples)" in eat32
    assert "missed (accuracy)" in bs32 and "missed (speed)" in bs32
    # --peers: each configuration's speed-up over a peer's, seed by seed within a run (eat 1.9x, 1.7x vs peer 1.2x, 2.0x)
    rows += [row("peer", 42, 1, 0.88, 1.2), row("peer", 43, 1, 0.88, 2.0)]
    write_csv(path, cols, rows)
    assert load("table_headline").main(["--results", str(path), "--out", str(out), "--peers", "peer"]) == 2
    assert "--peers peer: no rows with that label at bs=32" in capsys.readouterr().err  # bs=32 has no peer rows
    rows += [row("peer", s, 32, 0.88, 1.0) for s in (42, 43)]
    write_csv(path, cols, rows)
    assert load("table_headline").main(["--results", str(path), "--out", str(out), "--peers", "peer"]) == 0
    eat1 = next(ln for ln in out.read_text().split("### batch size 32")[0].splitlines() if ln.startswith("| eat |"))
    assert eat1.endswith("| 1.58x / 0.85x |")
    rows[0][0] = "lightning"  # a row of another harness is refused, with its line
    write_csv(path, cols, rows)
    assert load("table_headline").main(["--results", str(path), "--out", str(tmp_path / "x.md")]) == 2
    assert f"{path}:2: not a row of the declared harness" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()


def test_pairs_seeds_table_matches_rows_by_checkpoint_and_judges_the_targets(tmp_path, capsys):
    """experiments/table_pairs_seeds.py: static rows (mechanism none on <task>_static_seedS) and EAT rows at a
    selected point (<task>_eat_distill_seedS, operating_point_source=selection) pair up per seed, the latest row
    wins, other rows are ignored; accuracy and (QQP) F1 are judged against their budgets."""
    cols = ["task", "seed", "accuracy", "f1", "n_examples", "ckpt_path", "mechanism", "operating_point_source",
            "timestamp"]

    def row(task, kind, seed, acc, f1="", mech="none", src="manual", ts="2026-12-02T20:00:00"):
        return [task, seed, acc, f1, 1000, f"/w/outputs/{task}_{kind}_seed{seed}/checkpoints/best.ckpt", mech, src, ts]

    rows = [row("mnli", "static", s, 0.64) for s in (42, 43)]
    rows += [row("mnli", "eat_distill", 42, 0.64 - 2 / 1000, mech="exit", src="selection"),
             row("mnli", "eat_distill", 43, 0.64 - 3 / 1000, mech="exit", src="selection"),
             row("mnli", "eat_distill", 43, 0.50, mech="exit", src="manual"),  # a training-time row: ignored
             row("mnli", "eat_distill", 42, 0.10, mech="exit", src="selection", ts="2026-12-01T00:00:00"),  # older
             row("mnli", "eat_distill", 42, 0.20, mech="exit", src="selection", ts="2026-12-03T00:00:00")]
    rows[-1][4] = 500  # the first 500 examples only: not the split
    rows += [row("qqp", "static", 42, 0.84, 0.80), row("qqp", "eat_distill", 42, 0.83, 0.785, "exit", "selection")]
    path = tmp_path / "r.csv"
    write_csv(path, cols, rows)
    out = tmp_path / "p.md"
    assert load("table_pairs_seeds").main(["--results", str(path), "--out", str(out)]) == 0
    mnli, qqp = out.read_text().split("### qqp")
    assert "seeds 42, 43" in mnli and "no measurable difference (-2, -3 examples)" in mnli
    assert "within 0.5 points: met" in mnli and "| 64.00, 64.00 | 63.80, 63.70 |" in mnli
    acc, f1 = [ln for ln in qqp.splitlines() if ln.startswith(("| accuracy", "| f1"))]
    assert "-1.00 points (-10 examples)" in acc and "within 0.5 points: missed" in acc
    assert "-1.50 points" in f1 and "within 1.0 points: missed" in f1
    # --eat eat_distill_pair: the same static rows against another kind of EAT checkpoint; the default ignores it
    write_csv(path, cols, rows + [row("mnli", "eat_distill_pair", 42, 0.65, mech="exit", src="selection")])
    assert load("table_pairs_seeds").main(["--results", str(path), "--out", str(out), "--eat", "eat_distill_pair"]) == 0
    assert "seeds 42)" in out.read_text() and "| 64.00 | 65.00 |" in out.read_text() and "--eat eat_distill_pair" in \
        out.read_text()
    assert load("table_pairs_seeds").main(["--results", str(path), "--out", str(out)]) == 0
    assert "63.80, 63.70" in out.read_text()
    missing = ["--results", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "x.md")]
    assert load("table_pairs_seeds").main(missing) == 2
    assert "nope.csv: results file not found" in capsys.readouterr().err and not (tmp_path / "x.md").exists()


@needs_glue
def test_exit_heads_table_has_one_row_per_head_on_a_pair_task(tmp_path, capsys):
    """experiments/exit_heads.py on the pretrained MiniLM-L6 (untrained heads: the table's shape, not its values)
    under the MNLI offline protocol: a row per exit head plus the final head, accuracies in [0, 1], the final head
    agrees with itself; a mechanism without exits is one error and writes nothing."""
    common = ["experiment=mnli_offline", "model=minilm_l6", f"data.dir={GLUE_DIR}", "data.max_eval_samples=40",
              "threads=1"]
    out = tmp_path / "heads.csv"
    mod = load("exit_heads")
    assert mod.main(["--common", *common, "--config", "namesake", "mechanism=prune+sparse+exit",
                     "--out", str(out), "--summary", str(tmp_path / "heads.md")]) == 0
    rows = list(csv.DictReader(open(out)))
    assert [int(r["layer"]) for r in rows] == [1, 2, 3, 4, 5, 6] and rows[-1]["head"] == "final"
    assert float(rows[-1]["agree_with_final"]) == 1.0 and all(0 <= float(r["accuracy"]) <= 1 for r in rows)
    assert all(int(r["n_examples"]) == 40 for r in rows)
    assert mod.main(["--common", *common, "--config", "static", "mechanism=none", "--out", str(tmp_path / "x.csv")]) == 2
    assert "has no exit heads" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


@needs_glue
def test_pairs_script_runs_every_step_on_a_tiny_model(tmp_path):
    """experiments/pairs.sh mnli end to end on model=tiny (real MNLI files, a few steps): static, both stage-2
    models, the per-layer heads, the selection and the per-part ablation (a harness bench) all write their files,
    and the ablation switches each part off (its rows are the seven configurations)."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT), "EAT_GLUE_DIR": str(GLUE_DIR), "OUT": str(tmp_path / "out"),
           "RESULTS": str(tmp_path / "res"), "SUMMARIES": str(tmp_path / "md"), "N1": "8",
           "SELECT_ARGS": "grid=smoke threads=1 candidates=1",
           "STEPS": "train,heads,select,ablation"}  # bench: the same eat.bench call as the ablation (suite time)
    (tmp_path / "md").mkdir()
    small = ["model=tiny", "data.max_train_samples=48", "data.max_eval_samples=24", "data.batch_size=8",
             "data.selection_examples=16", "trainer.max_epochs=1", "threads=1"]
    r = subprocess.run(["bash", str(ROOT / "experiments" / "pairs.sh"), "mnli", "0", *small], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = tmp_path / "res"
    heads = list(csv.DictReader(open(res / "exit_heads" / "mnli_seed0.csv")))
    assert {h["config"] for h in heads} == {"plain", "distill"}
    assert (res / "mnli_offline_select" / "pairs_seed0" / "operating_point.yaml").exists()
    ablation = list(csv.DictReader(open(res / "mnli_pairs_ablation.csv")))
    assert len(ablation) == 7 and all(a["harness"] for a in ablation)
    # HEADS=pair: a third stage-2 model from the same static one, its heads reading the two segments
    r = subprocess.run(["bash", str(ROOT / "experiments" / "pairs.sh"), "mnli", "0", *small], capture_output=True,
                       env={**env, "HEADS": "pair", "STAGE2": "distill", "STEPS": "train,heads,select"}, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    heads = list(csv.DictReader(open(res / "exit_heads" / "mnli_pair_seed0.csv")))
    assert {h["config"] for h in heads} == {"plain", "distill", "distill_pair"}
    op = yaml.safe_load(open(res / "mnli_offline_select" / "pairs_seed0_pair" / "operating_point.yaml"))
    assert op["mechanism"]["exit"]["pooling"] == "pair"
    # REF=static: the same selection, the budget measured against the static fine-tune (eat.select reference=)
    r = subprocess.run(["bash", str(ROOT / "experiments" / "pairs.sh"), "mnli", "0", *small], capture_output=True,
                       env={**env, "HEADS": "pair", "REF": "static", "STEPS": "select"}, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    op = yaml.safe_load(open(res / "mnli_offline_select" / "pairs_seed0_pair_refstatic" / "operating_point.yaml"))
    assert op["chosen"]["reference"] == str(tmp_path / "out" / "mnli_static_seed0" / "checkpoints" / "best.ckpt")
    r = subprocess.run(["bash", str(ROOT / "experiments" / "pairs.sh"), "mnli", "0"], capture_output=True,
                       env={**env, "REF": "final"}, text=True, timeout=60)
    assert r.returncode == 2 and "REF=final: allowed values are static" in r.stderr
    # pairs_bench_seeds.sh: every listed seed's point against one static model, in one harness run
    seeds = ROOT / "experiments" / "pairs_bench_seeds.sh"
    r = subprocess.run(["bash", str(seeds), "mnli", "0", "model=tiny", "data.max_eval_samples=24", "threads=1"],
                       env={**env, "HEADS": "pair", "REF": "static", "BENCH_BS": "8"}, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader(open(res / "mnli_pairs_seeds_pair_refstatic.csv")))
    assert [(x["batch_size"], x["operating_point_source"]) for x in rows] == [("8", "manual"), ("8", "selection")]
    assert rows[1]["speedup_vs"] == "static" and int(rows[1]["passes"]) >= 5
    r = subprocess.run(["bash", str(seeds), "mnli", "0 1"], env={**env, "HEADS": "pair"}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "mnli_static_seed1" in r.stderr and "not found (seed 1)" in r.stderr


def test_selection_vs_dev_table_pairs_each_chosen_point_with_its_evaluation_rows(tmp_path, capsys):
    """experiments/table_selection_vs_dev.py: the selection-split loss from operating_point.yaml next to the
    evaluation loss of the latest whole-split selection row; hf_static, bs=1 and subset rows are ignored."""
    for seed, score in ((42, 0.905), (43, 0.91)):
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "op.yaml").write_text(
            f"chosen:\n  overrides: [task=sst2, mechanism=exit, mechanism.exit.threshold=0.8]\n  score: {score}\n"
            f"  static_score: 0.91\n  n_examples: 2000\n")
    cols = ["task", "seed", "model", "mechanism", "batch_size", "n_examples", "accuracy", "operating_point_source",
            "timestamp"]
    t0, t1 = "2026-12-01T00:00:00", "2026-12-02T00:00:00"
    rows = [["sst2", 42, "minilm_l6", "none", 32, 800, 0.88, "manual", t0],
            ["sst2", 42, "hf_static", "none", 32, 800, 0.99, "manual", t0],
            ["sst2", 42, "minilm_l6", "exit", 32, 800, 0.86, "selection", t0],  # older: superseded
            ["sst2", 42, "minilm_l6", "exit", 32, 800, 0.87, "selection", t1],
            ["sst2", 42, "minilm_l6", "exit", 1, 800, 0.10, "selection", t1],
            ["sst2", 42, "minilm_l6", "exit", 32, 100, 0.20, "selection", t1]]  # a subset
    path, out = tmp_path / "r.csv", tmp_path / "t.md"
    write_csv(path, cols, rows)
    argv = ["--case", "sst2", str(tmp_path / "s{seed}" / "op.yaml"), "--results", str(path), "--seeds", "42", "43",
            "--out", str(out)]
    assert load("table_selection_vs_dev").main(argv) == 0
    text = out.read_text()
    assert "| sst2 | 42 | mechanism=exit mechanism.exit.threshold=0.8 | 2000 | -0.50 | 800 | -1.00 (-8 examples) " \
           "| -0.50 |" in text
    assert "| sst2 | 43 |" in text and "not in --results" in text  # seed 43 has no evaluation rows
    assert "evaluation loss is larger at 1 of 1" in text
    argv[2] = str(tmp_path / "none{seed}.yaml")
    assert load("table_selection_vs_dev").main(argv[:-1] + [str(tmp_path / "x.md")]) == 2
    assert "none42.yaml not found" in capsys.readouterr().err and not (tmp_path / "x.md").exists()


def test_exit_frontier_leaves_each_row_at_its_first_sure_head():
    """exit_heads.frontier_rows: a row leaves at the first head whose top probability reaches the threshold,
    with that head's prediction; rows no head is sure of take the final head's."""
    import torch
    big = 4.0  # softmax([4, 0]) = 0.982: sure at every threshold below 0.99
    logits = {0: torch.tensor([[big, 0.0], [0.0, 0.0], [0.0, 0.0]]),   # row 0 sure of class 0 after layer 1
              1: torch.tensor([[0.0, big], [0.0, 1.0], [0.0, 0.0]]),   # row 1: p = 0.73 after layer 2
              3: torch.tensor([[0.0, big], [big, 0.0], [0.0, big]])}   # the final head (4 layers)
    labels = torch.tensor([0, 1, 1])
    rows = {r["threshold"]: r for r in load("exit_heads").frontier_rows("x", logits, labels)}
    assert rows[0.7]["avg_exit_layer"] == round((1 + 2 + 4) / 3, 3) and rows[0.7]["accuracy"] == 1.0
    assert rows[0.75]["avg_exit_layer"] == round((1 + 4 + 4) / 3, 3) and rows[0.75]["accuracy"] == round(2 / 3, 4)
    assert rows[0.99]["avg_exit_layer"] == 4 and rows[0.99]["agree_with_final"] == 1.0
    assert rows[0.7]["agree_with_final"] == round(1 / 3, 4) and rows[0.7]["layers_saved"] == round(4 / (7 / 3), 3)


def test_speedup_bound_fits_the_two_static_models_and_bounds_a_zero_overhead_eat(tmp_path, capsys):
    """experiments/speedup_bound.py: T(k) = F + k L through the full (6-layer) and truncated (4-layer) rows of one
    seed's run; an EAT doing e layers of work is bounded by T(4) / (F + e L), and a missing label is an error."""
    cols = ["harness", "output_dir", "seed", "batch_size", "latency_ms_per_example", "avg_exit_layer", "num_layers",
            "gflops_per_example", "gflops_static_per_example"]

    def row(label, ms, layers, gflops):
        return ["eat.bench", f"predictions/seed42/{label}", 42, 1, ms, layers, 6, gflops, 0.6]

    # F = 1.0, L = 0.5: T(6) = 4.0, T(4) = 3.0; the EAT does 2 layers' work (0.2 of 0.6 GFLOPs) in 2.5 ms
    rows = [row("ort_int8", 4.0, 6, 0.6), row("truncated_k4_ort_int8", 3.0, 4, 0.4), row("eat", 2.5, 3.5, 0.2)]
    path, out = tmp_path / "r.csv", tmp_path / "b.md"
    write_csv(path, cols, rows)
    assert load("speedup_bound").main(["--results", str(path), "--out", str(out), "--configs", "eat"]) == 0
    line = next(ln for ln in out.read_text().splitlines() if "| eat |" in ln)
    # measured 3.0 / 2.5 = 1.20x; bound 3.0 / (1.0 + 2 x 0.5) = 1.50x; 1.5x needs e <= (2.0 - 1.0) / 0.5 = 2.00;
    # no pruning, best depth just above 1: (1.0 + 2 x 0.5) / (1.0 + 1.01 x 0.5) = 1.33x
    assert "| 1.000 | 0.500 | eat | 3.50 | 2.00 | 2.500 | 1.20x | 1.50x | 2.00 | 1.33x |" in line
    assert load("speedup_bound").main(["--results", str(path), "--out", str(tmp_path / "x.md"), "--configs", "eat2"]) == 2
    assert "no row labelled 'eat2'" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()
    # {k}: each seed against its own matched peer, k = ceil(exit depth): 3.5 -> the 4-layer row, 2.5 -> the 3-layer
    rows += [[*row("ort_int8", 4.0, 6, 0.6)[:2], 43, *row("", 4.0, 6, 0.6)[3:]],
             [*row("truncated_k3_ort_int8", 2.5, 3, 0.3)[:2], 43, *row("", 2.5, 3, 0.3)[3:]],
             [*row("truncated_k4_ort_int8", 3.0, 4, 0.4)[:2], 43, *row("", 3.0, 4, 0.4)[3:]],
             [*row("eat", 2.4, 2.5, 0.2)[:2], 43, *row("", 2.4, 2.5, 0.2)[3:]]]
    write_csv(path, cols, rows)
    assert load("speedup_bound").main(["--results", str(path), "--out", str(out), "--configs", "eat",
                                       "--truncated", "truncated_k{k}_ort_int8"]) == 0
    lines = [ln for ln in out.read_text().splitlines() if "| eat |" in ln]
    assert lines[0].startswith("| 42 | 4.000 | 3.000 (k = 4) |") and lines[1].startswith("| 43 | 4.000 | 2.500 (k = 3) |"), lines
    assert "| 2.400 | 1.04x |" in lines[1]  # 2.5 / 2.4 against the 3-layer peer


def test_layer_cost_fit_reads_a_layers_cost_off_every_depth_and_bounds_an_eat(tmp_path, capsys):
    """experiments/layer_cost_fit.py: the least-squares line T(K) = F + K L through every depth timed, its residuals,
    and for an EAT at depth d the bound T(ceil(d)) / (F + d L); a depth timed twice, a single depth, or a depth whose
    matched peer was not timed is an error (exit 2) and writes nothing."""
    cols = ["harness", "model", "seed", "batch_size", "num_layers", "latency_ms_per_example", "speedup", "speedup_min",
            "speedup_max"]

    def row(k, ms, model="ort_int8_opt"):
        return ["eat.bench", model, 42, 1, k, ms, 2.0, 1.9, 2.1]

    # F = 0.5, L = 1.0 exactly, plus HF fp32's row (another model: ignored)
    rows = [row(6, 9.0, "hf_static")] + [row(k, 0.5 + k) for k in (6, 5, 4, 3)]
    path, out = tmp_path / "c.csv", tmp_path / "fit.md"
    write_csv(path, cols, rows)
    fit = load("layer_cost_fit")
    assert fit.main(["--results", str(path), "--out", str(out), "--depths", "3.5"]) == 0
    text = out.read_text()
    assert "L = 1.000 ms per layer, F = 0.500 ms" in text and "| 5 | 5.500 | 2.00x [1.90-2.10] | 5.500 | +0.000 |" in text
    # d = 3.5 -> k = 4: T(4) = 4.5 against 0.5 + 3.5 = 4.0: 1.12x; 1.5x needs e <= (4.5 / 1.5 - 0.5) / 1 = 2.50
    assert "| 3.50 | 4 | 4.500 | 4.000 | 1.12x | 2.50 |" in text
    args = ["--results", str(path), "--out", str(tmp_path / "x.md")]
    assert fit.main(args + ["--depths", "6.5"]) == 2 and "--depths 6.5" in capsys.readouterr().err
    write_csv(path, cols, rows + [row(4, 9.9)])  # a rerun appended to the same file
    assert fit.main(args) == 2 and "K = 4 twice" in capsys.readouterr().err
    write_csv(path, cols, [row(6, 6.5), row(5, 5.5)])
    assert fit.main(args + ["--depths", "3.5"]) == 2 and "needs the 4-layer model" in capsys.readouterr().err
    write_csv(path, cols, [row(6, 6.5)])
    assert fit.main(args) == 2 and "one depth only" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()


def test_depth_frontier_table_finds_dominated_static_models_and_compares_at_matched_accuracy(tmp_path, capsys):
    """experiments/table_depth_frontier.py: both frontiers by cost, each K-layer static model marked with the fastest
    EAT point at least as accurate on dev (or none), and each eat_match_kK against its K-layer model, seed by seed;
    a run without the full static model, or a matched point without its K-layer model, is an error (exit 2) and
    writes nothing."""
    cols = ["harness", "speedup", "speedup_min", "speedup_max", "speedup_vs", "output_dir", "seed", "batch_size",
            "accuracy", "n_examples", "avg_exit_layer", "latency_ms_per_example"]

    def row(label, seed, acc_examples, ms, layers):  # speed-up over a 10 ms baseline
        return ["eat.bench", 10 / ms, 9 / ms, 11 / ms, "hf_fp32", f"predictions/seed{seed}/{label}", seed, 1,
                acc_examples / 1000, 1000, layers, ms]

    rows = []
    for s, jitter in ((42, 0), (43, 1)):
        rows += [row("hf_fp32", s, 900, 10.0, 6), row("ort_int8_opt", s, 900, 5.0, 6),
                 row("truncated_k2_ort_int8_opt", s, 850, 2.0, 2), row("truncated_k4_ort_int8_opt", s, 880, 3.5, 4),
                 # matched to K=2: 2 examples more accurate, 1.6x faster; matched to K=4: 20 examples less, slower
                 row("eat_match_k2", s, 852 + jitter, 1.25, 1.4), row("eat_match_k4", s, 860, 3.6, 2.9),
                 row("eat_headline", s, 897, 3.0, 3.2),
                 # the same point as eat_match_k2 in another runtime: compared with the 2-layer model too
                 row("eat_match_k2_tensor", s, 849, 1.0, 1.4)]
    path, out = tmp_path / "f.csv", tmp_path / "f.md"
    write_csv(path, cols, rows)
    table = load("table_depth_frontier")
    assert table.main(["--results", str(path), "--out", str(out), "--figure", str(tmp_path / "f.png")]) == 0
    text = out.read_text()
    line = {ln.split(" | ")[0].lstrip("| "): ln for ln in text.splitlines() if ln.startswith("| ")}
    assert line["truncated_k2_ort_int8_opt"].endswith("| eat_match_k2 |")  # 85.0 <= 85.25, 1.25 < 2.0 ms
    assert line["truncated_k4_ort_int8_opt"].endswith("| eat_headline |")  # the fastest EAT at >= 88.0
    assert line["ort_int8_opt"].endswith("| none |")  # 90.0: no EAT point is as accurate
    assert "| 2.00x [1.80-2.20]; 2.00x [1.80-2.20] | 1.00x / 1.00x |" in line["ort_int8_opt"]
    assert "| 8.00x [7.20-8.80]; 8.00x [7.20-8.80] | 4.00x / 4.00x |" in line["eat_match_k2"]
    assert "| 2 | 85.00 | 85.25 | no measurable difference (+2, +3 examples) | 1.40 | 2.000 / 1.250 | 1.60x / 1.60x | eat_match_k2 |" in text
    assert "| 2 | 85.00 | 84.90 | no measurable difference (-1, -1 examples) | 1.40 | 2.000 / 1.000 | 2.00x / 2.00x | eat_match_k2_tensor |" in text
    assert "| 4 | 88.00 | 86.00 | -2.00 points (-20, -20 examples) | 2.90 | 3.500 / 3.600 | 0.97x / 0.97x |" in text
    assert (tmp_path / "f.png").stat().st_size > 0
    args = ["--results", str(path), "--out", str(tmp_path / "x.md")]
    write_csv(path, cols, [r for r in rows if "truncated_k2" not in r[5]])
    assert table.main(args) == 2 and "eat_match_k2: its K-layer model truncated_k2_ort_int8_opt has no rows" in capsys.readouterr().err
    write_csv(path, cols, [r for r in rows if not r[5].endswith("/ort_int8_opt")])
    assert table.main(args) == 2 and "needs the full static model (ort_int8_opt)" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()


def test_script_settings_are_checked_before_any_work():
    """Environment settings of the experiment scripts: sst2_train.sh's STEPS is a count of optimiser steps (sst2.sh's
    own STEPS, a list of steps, reaches it as TRAIN_STEPS), runtimes.sh's HEADS is pair on a pair task or unset, its
    EAT distill or joint, layer_cost.sh's TASK a task it knows and MIN_K a depth below the backbone's 6 layers. Each bad
    value stops the script at once (exit 2, before any training) naming the setting and what it allows."""
    import os
    import subprocess

    def run(script, args, **env):
        return subprocess.run(["bash", str(ROOT / "experiments" / script), *args], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=60)

    r = run("sst2_train.sh", ["0"], STEPS="train,select")
    assert r.returncode == 2 and "STEPS=train,select" in r.stderr and "an integer" in r.stderr
    for heads, task in (("mean", "qqp"), ("pair", "sst2")):
        r = run("runtimes.sh", [task, "0"], HEADS=heads)
        assert r.returncode == 2 and f"HEADS={heads}" in r.stderr and "pair (tasks mnli, qqp)" in r.stderr
    r = run("runtimes.sh", ["mnli", "0"], EAT="frozen")  # the EAT model of a pair task, named as pairs.sh names it
    assert r.returncode == 2 and "EAT=frozen" in r.stderr and "distill, joint" in r.stderr
    r = run("layer_cost.sh", ["0"], TASK="cola")
    assert r.returncode == 2 and "TASK=cola" in r.stderr and "sst2, mnli, qqp" in r.stderr
    for k in ("6", "0", "x"):
        r = run("layer_cost.sh", ["0"], MIN_K=k)
        assert r.returncode == 2 and f"MIN_K={k}" in r.stderr and "1 to 5" in r.stderr
        r = run("depth_frontier.sh", ["0"], KS=f"2 {k}")  # every depth the EAT points are matched to
        assert r.returncode == 2 and f"K={k}" in r.stderr and "1 to 5" in r.stderr
    r = run("depth_frontier.sh", ["0"], POINTS="prune")  # exits-only points (runtime=ort_int8_opt) or the default
    assert r.returncode == 2 and "POINTS=prune" in r.stderr and "exits or unset" in r.stderr
    r = run("depth_frontier.sh", ["0"])  # a seed never trained: the command that trains it, before any work
    assert r.returncode == 2 and "experiments/sst2.sh 0" in r.stderr
