"""Operating points chosen on held-out data (the selection split, eat.select) and timed by the one declared
harness (eat.bench)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import GLUE_DIR, ROOT, compose_cfg, needs_glue, tiny_overrides


def datamodule(overrides):
    from eat.config import to_run_config
    from eat.data.glue import GLUEDataModule

    rc = to_run_config(compose_cfg([f"data.dir={GLUE_DIR}", "logger=none", "output_dir=unused", *overrides]))
    return GLUEDataModule(rc.task, rc.data, None, rc.seed)


# ------------------------------------------------------------------------------------------ selection split
@needs_glue
def test_sst2_selection_split_is_deterministic_and_disjoint_from_training_and_dev():
    dm = datamodule(["task=sst2"])
    train, sel, dev = dm.read("train"), dm.read("selection"), dm.read("validation")
    assert len(sel["idx"]) == 2000  # data.selection_examples' default
    again = datamodule(["task=sst2", "seed=7"]).read("selection")  # the run's seed does not move it
    assert again["idx"] == sel["idx"]
    assert not set(train["idx"]) & set(sel["idx"])  # disjoint rows ...
    assert not set(train["text_a"]) & set(sel["text_a"])  # ... and texts (train.tsv repeats some lines)
    assert not set(sel["text_a"]) & set(dev["text_a"])
    assert len(train["idx"]) + len(sel["idx"]) <= 67349
    other = datamodule(["task=sst2", "data.selection_seed=1"]).read("selection")
    assert other["idx"] != sel["idx"]  # the seed really draws the rows


@needs_glue
def test_offline_protocols_carve_selection_from_their_training_part():
    qqp = datamodule(["experiment=qqp_offline", "data.selection_examples=500"])
    train, sel, val = qqp.read("train"), qqp.read("selection"), qqp.read("validation")
    assert len(sel["idx"]) == 500 and max(sel["idx"]) < 30000  # rows 0:30000 of QQP dev are the training part
    assert not set(train["idx"]) & set(sel["idx"]) and min(val["idx"]) >= 30000
    mnli = datamodule(["experiment=mnli_offline", "data.selection_examples=300"])
    m_train, m_sel = mnli.read("train"), mnli.read("selection")  # carved from dev_mismatched (its train file)
    assert len(m_sel["idx"]) == 300 and len(m_train["idx"]) <= 9832 - 300
    assert not set(zip(m_train["text_a"], m_train["text_b"])) & set(zip(m_sel["text_a"], m_sel["text_b"]))
    matched = mnli.read("validation_matched")
    assert not set(zip(m_sel["text_a"], m_sel["text_b"])) & set(zip(matched["text_a"], matched["text_b"]))


@needs_glue
def test_selection_off_and_too_large():
    from eat.data.sources import DataError

    dm = datamodule(["task=sst2", "data.selection_examples=0"])
    assert len(dm.read("train")["idx"]) == 67349 and dm.read("selection")["idx"] == []
    big = datamodule(["experiment=qqp_offline", "data.selection_examples=30000"])
    with pytest.raises(DataError, match=r"data.selection_examples=30000 .* only 30000 rows"):
        big.read("train")


def test_sentence_selection_holds_out_whole_sentences_and_every_phrase_of_them():
    from eat.data.glue import split_selection, whole_sentences
    from eat.data.sources import DataError

    texts = ["a b c d", "a b", "b c", "c d", "x y", "b", "a b c d", "q", "x y z", "b c"]
    assert whole_sentences(texts) == [0, 7, 8]  # "a b c d" (its first row), "q", "x y z": no one's phrase
    cols = {"text_a": texts, "label": [i % 2 for i in range(len(texts))], "idx": list(range(len(texts)))}
    picks = {tuple(split_selection(cols, 1, seed, "t", unit="sentence")["selection"]["idx"]) for seed in range(20)}
    assert picks == {(0,), (7,), (8,)}  # a phrase is never drawn, a duplicate sentence only once
    seed = next(s for s in range(20) if split_selection(cols, 1, s, "t", unit="sentence")["selection"]["idx"] == [0])
    out = split_selection(cols, 1, seed, "t", unit="sentence")
    assert out["train"]["idx"] == [4, 7, 8]  # "a b c d" twice, "a b", "b c" twice, "c d", "b": all its phrases
    by_row = split_selection(cols, 1, seed, "t")  # unit=row: only the row (and its duplicates) leaves
    held = texts[by_row["selection"]["idx"][0]]
    assert by_row["train"]["idx"] == [i for i, t in enumerate(texts) if t != held]
    with pytest.raises(DataError, match=r"selection_examples=3 .* only 3 whole sentences"):
        split_selection(cols, 3, 0, "t", unit="sentence")
    pairs = {**cols, "text_b": texts}
    with pytest.raises(DataError, match=r"selection_unit=sentence is not valid for t: .* use data.selection_unit=row"):
        split_selection(pairs, 1, 0, "t", unit="sentence")


@needs_glue
def test_sst2_sentence_selection_looks_like_dev_and_shares_no_phrase_with_training():
    dm = datamodule(["task=sst2", "data.selection_unit=sentence"])
    train, sel, dev = dm.read("train"), dm.read("selection"), dm.read("validation")
    assert len(sel["idx"]) == 2000 and not set(train["idx"]) & set(sel["idx"])
    held = {tuple(w[a:b]) for t in sel["text_a"] for w in [t.split()] for a in range(len(w))
            for b in range(a + 1, len(w) + 1)}
    assert not any(tuple(t.split()) in held for t in train["text_a"])  # no phrase of a selection sentence
    assert 46000 < len(train["idx"]) < 47000  # 2,000 sentences and their ~19,000 phrases left training
    words = lambda cols: sum(len(t.split()) for t in cols["text_a"]) / len(cols["text_a"])  # noqa: E731
    rows = datamodule(["task=sst2"]).read("selection")
    assert abs(words(sel) - words(dev)) < 1.5 < words(dev) - words(rows)  # sentences like dev's, not phrases
    assert not set(sel["text_a"]) & set(dev["text_a"])


def _point(label, correct, flops):
    return {"label": label, "idx": list(range(len(correct))), "correct": correct,
            "score": sum(correct) / len(correct), "flops_reduction": flops}


def test_confidence_rejects_a_point_whose_loss_is_within_budget_only_by_luck():
    from eat.select import choose, delta_lower

    n = 1000
    static = _point("static", [1] * 700 + [0] * 300, 1.0)
    # 'churn' trades 60 right answers for 57 others: -0.3 points, many changed rows; 'steady' loses 3 rows only
    churn = _point("churn", [0] * 60 + [1] * 640 + [1] * 57 + [0] * 243, 2.0)
    steady = _point("steady", [0] * 3 + [1] * 697 + [0] * 300, 1.5)
    assert abs(churn["score"] - static["score"] + 0.003) < 1e-9 and abs(steady["score"] - 0.697) < 1e-9
    chosen, _ = choose(static, [dict(churn), dict(steady)], 0.5, "flops", 4)
    assert chosen["label"] == "churn"  # the point estimate alone takes the fastest
    chosen, pts = choose(static, [dict(churn), dict(steady)], 0.5, "flops", 4, confidence=0.8)
    assert chosen["label"] == "steady" and [p["feasible"] for p in pts] == [False, True]
    # the bound by hand: 117 of 1000 rows differ (d = -1 x60, +1 x57)
    d = [-1] * 60 + [1] * 57 + [0] * (n - 117)
    mean = sum(d) / n
    sd = (sum((x - mean) ** 2 for x in d) / (n - 1)) ** 0.5
    assert abs(delta_lower(static, churn, 0.8) - (mean - 0.8416212 * sd / n ** 0.5)) < 1e-6
    assert delta_lower(static, churn, 0.0) == mean
    assert abs(pts[0]["delta_se"] - sd / n ** 0.5) < 1e-12  # written to selection.csv for any confidence
    with pytest.raises(ValueError, match="other rows"):
        delta_lower(static, dict(churn, idx=list(range(1, n + 1))), 0.8)


def test_confidence_out_of_range_names_the_key():
    from eat.config import ConfigError, SelectConfig

    with pytest.raises(ConfigError, match=r"confidence.*\[0, 1\)"):
        SelectConfig(confidence=1.0, grid={"exit": ["mechanism=exit"]})


# ------------------------------------------------------------------------------------------ the harness
def test_harness_measures_an_injected_delay_by_the_right_factor_with_rotating_order():
    from eat import bench

    def sleeper(ms):
        def step(_):
            time.sleep(ms / 1e3)
            return ms
        return step

    # 20 ms of "work" and the same step with 40 ms injected: 3x slower. Delays are long against the scheduling
    # jitter of a busy 2-core machine (a few ms), so the median per-pass ratio must land near 1/3.
    steps = {"base": sleeper(20), "slow": sleeper(60), "same": sleeper(20)}
    t = bench.interleave(steps, batches=list(range(12)), passes=5, warmup=1)
    ratios = t.ratios("slow", "base")
    assert len(ratios) == 5 and len(t.pass_ms["base"]) == 5  # per-pass ratios, one per pass
    med = sorted(ratios)[2]
    assert 0.8 * (4 / 12) < med < 1.2 * (4 / 12)  # 3x slower, within sleep's jitter on a busy machine
    assert 0.8 < sorted(t.ratios("same", "base"))[2] < 1.2
    firsts = [order[0] for order in t.order]
    assert {n: firsts.count(n) for n in steps} == {"base": 4, "slow": 4, "same": 4}  # the order rotates
    assert all(sorted(o) == sorted(steps) for o in t.order)  # every configuration runs on every batch


@needs_glue
def test_harness_rejects_a_mistyped_configuration_with_one_line_and_writes_nothing(tmp_path):
    res = tmp_path / "r.csv"
    cmd = [sys.executable, "-m", "eat.bench", "--glue", str(GLUE_DIR), "--common", "model=tiny",
           "data.max_eval_samples=8", "--config", "typo", "mechanism=prun", "--config", "static", "mechanism=none",
           "--results", str(res)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    err = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "mechanism=prun" in err[0], p.stderr[-2000:]
    assert not res.exists()


# ------------------------------------------------------------------------------------------ end to end
@needs_glue
def test_make_select_then_make_bench_on_a_tiny_model(tmp_path):
    from eat.runner import run

    run(compose_cfg(tiny_overrides(tmp_path, "mechanism=exit", "eval_batch_sizes=[8]")))
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    op, res, bres = tmp_path / "sel" / "op.yaml", tmp_path / "dev.csv", tmp_path / "bench" / "results.csv"
    small = "model=tiny data.max_eval_samples=24 threads=1"
    make = ["make", "-s", "-C", str(ROOT), f"CKPT={ckpt}", f"GLUE={GLUE_DIR}", f"OVERRIDES={small}",
            f"SELECT_OUT={op}", f"RESULTS={res}", f"BENCH_RESULTS={bres}", f"PY={sys.executable}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    grid = "grid=smoke batch_size=8 threads=1"
    p = subprocess.run([*make, "select", f"SELECT_ARGS={grid}"], capture_output=True, text=True, env=env, timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "[eat] select: chose" in p.stdout
    table = list(csv.DictReader(open(op.parent / "selection.csv")))
    assert len(table) == 4 and table[0]["label"].startswith("static")  # static + the 3 grid points
    from omegaconf import OmegaConf

    chosen = OmegaConf.load(op)
    assert chosen.operating_point_source == "selection" and chosen.chosen.split == "selection"
    rows = list(csv.DictReader(open(res)))  # the dev evaluation, once, at the chosen point
    assert rows and all(r["operating_point_source"] == "selection" for r in rows)
    assert {r["split"] for r in rows} == {"validation"}
    assert all(str(chosen.mechanism.exit.threshold) in r["mechanism_params"] for r in rows)

    p = subprocess.run([*make, "bench", "BENCH_ARGS=--batch-sizes 1 8 --threads 1 --warmup 1"], capture_output=True,
                       text=True, env=env, timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = list(csv.DictReader(open(bres)))
    assert len(rows) == 6  # 3 configurations x 2 batch sizes
    for r in rows:
        assert r["harness"] == "eat.bench" and int(r["passes"]) >= 5 and r["speedup_vs"] == "static"
        assert float(r["speedup_min"]) <= float(r["speedup"]) <= float(r["speedup_max"])
        assert (bres.parent / r["output_dir"] / f"predictions_validation_bs{r['batch_size']}.csv").is_file()
    by = {(r["model"], r["mechanism"], r["batch_size"]): r for r in rows}
    assert by[("tiny", "none", "1")]["speedup"] == "1"  # the baseline
    assert by[("hf_static", "none", "8")]["accuracy"] == by[("tiny", "none", "8")]["accuracy"]  # same weights
    eat_rows = [r for r in rows if r["operating_point_source"] == "selection"]
    assert len(eat_rows) == 2 and eat_rows[0]["accuracy"] == eat_rows[1]["accuracy"]  # batch invariance
    assert "median of the per-pass ratios" in (bres.parent / "summary.md").read_text()


def test_select_measures_the_budget_against_a_reference_checkpoint(tmp_path):
    """reference=PATH: the static row is that checkpoint (e.g. the static fine-tune a jointly trained EAT model
    started from), not the evaluated checkpoint with mechanism=none; the operating point records it."""
    from omegaconf import OmegaConf

    from eat.config import ConfigError, SelectConfig
    from eat.runner import run
    from eat.select import evaluate_point, main

    run(compose_cfg(tiny_overrides(tmp_path / "eat", "mechanism=exit")))
    run(compose_cfg(tiny_overrides(tmp_path / "ref", "mechanism=none", "seed=7", "optim.lr=0.01")))
    eat_ckpt, ref = (str(tmp_path / n / "run" / "checkpoints" / "best.ckpt") for n in ("eat", "ref"))
    common = [f"ckpt_path={eat_ckpt}", "model=tiny", f"data.dir={GLUE_DIR}", "data.max_train_samples=48",
              "threads=1"]
    op = tmp_path / "sel" / "op.yaml"
    assert main(["grid=smoke", "speed=flops", "batch_size=8", "threads=1", f"out={op}", f"reference={ref}",
                 "--", *common]) == 0
    static = next(csv.DictReader(open(op.parent / "selection.csv")))
    by_ref = evaluate_point("r", [*common, "mechanism=none", f"ckpt_path={ref}"], "selection", 8)
    by_own = evaluate_point("o", [*common, "mechanism=none"], "selection", 8)
    assert by_ref["correct"] != by_own["correct"]  # the two static rows differ, so the test tells them apart
    assert float(static["score"]) == pytest.approx(by_ref["score"], abs=1e-6)
    chosen = OmegaConf.load(op).chosen
    assert chosen.reference == ref and chosen.ckpt_path == eat_ckpt  # the point is the EAT model's
    assert chosen.static_score == pytest.approx(by_ref["score"], abs=1e-6)
    with pytest.raises(ConfigError, match=r"reference=.*not a file"):
        SelectConfig(reference=str(tmp_path / "missing.ckpt"), grid={"exit": ["mechanism=exit"]})
    with pytest.raises(SystemExit) as e:  # the command line: one error line, exit 2, nothing written
        main(["grid=smoke", f"out={tmp_path / 'bad' / 'op.yaml'}", f"reference={tmp_path / 'missing.ckpt'}", "--",
              *common])
    assert e.value.code == 2 and not (tmp_path / "bad").exists()


def test_select_matches_the_accuracy_of_a_truncated_reference(tmp_path):
    """reference=PATH reference_keep_layers=K: the reference row is the smaller static model (the first K layers,
    peer=truncated), so budget=0 picks the fastest point at least as accurate as it; K is recorded, and K without
    a reference is refused naming the key."""
    from omegaconf import OmegaConf

    from eat.config import ConfigError, SelectConfig
    from eat.runner import run
    from eat.select import evaluate_point, main

    run(compose_cfg(tiny_overrides(tmp_path / "eat", "mechanism=exit")))
    run(compose_cfg(tiny_overrides(tmp_path / "k2", "mechanism=none", "model.keep_layers=2")))
    eat_ckpt, ref = (str(tmp_path / n / "run" / "checkpoints" / "best.ckpt") for n in ("eat", "k2"))
    common = [f"ckpt_path={eat_ckpt}", "model=tiny", f"data.dir={GLUE_DIR}", "data.max_train_samples=48",
              "threads=1"]
    op = tmp_path / "sel" / "op.yaml"
    assert main(["grid=smoke", "speed=flops", "budget=0", "batch_size=8", "threads=1", f"out={op}",
                 f"reference={ref}", "reference_keep_layers=2", "--", *common]) == 0
    rows = list(csv.DictReader(open(op.parent / "selection.csv")))
    k2 = evaluate_point("k2", [*common, "mechanism=none", f"ckpt_path={ref}", "model.keep_layers=2"], "selection", 8)
    assert float(rows[0]["score"]) == pytest.approx(k2["score"], abs=1e-6)
    assert k2["avg_exit_layer"] == 2  # the reference really ran 2 of the tiny model's 4 layers
    chosen = OmegaConf.load(op).chosen
    assert chosen.reference_keep_layers == 2 and chosen.budget_points == 0
    feasible = [r for r in rows[1:] if r["feasible"] == "True"]
    assert all(float(r["score"]) >= k2["score"] - 1e-9 for r in feasible)
    assert chosen.score >= k2["score"] - 1e-9
    with pytest.raises(ConfigError, match=r"reference_keep_layers=2.*needs reference=PATH"):
        SelectConfig(reference_keep_layers=2, grid={"exit": ["mechanism=exit"]})
