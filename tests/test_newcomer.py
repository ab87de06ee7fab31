"""Issue 17, a newcomer's first hour: debug=fast limits the whole run, a missing task file or an unreachable hub
ends in one line naming the way forward, eval.py takes the model from the checkpoint, checkpoints are
weights-only by default, and logs carry one copy of each line."""
from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import pytest
import torch

from eat.callbacks.latency import latency_warning
from eat.config import ConfigError
from eat.data.sources import DataError, check_sources
from eat.results import read_rows
from tests.conftest import GLUE_DIR, TINY, compose_cfg, needs_glue, run_script, tiny_overrides

pytestmark = needs_glue


def in_process(overrides, config_name="train"):
    from eat.runner import run

    threads = torch.get_num_threads()
    try:
        return run(compose_cfg(overrides, config_name))
    finally:
        torch.set_num_threads(threads)


def one_error_line(p) -> str:
    """The run failed with exit code 2 and said why in one line, with no traceback."""
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ------------------------------------------------------------------------------------------------ item 1
def test_debug_fast_limits_training_validation_and_the_final_evaluation(tmp_path):
    """debug=fast on the real SST-2 files: 5 training steps, and the final evaluation on 200 dev rows (of 872)
    instead of the whole dev set."""
    cfg = compose_cfg(["model=tiny", "debug=fast", f"data.dir={GLUE_DIR}", "trainer.accelerator=cpu",
                       "trainer.devices=1"])
    assert cfg.trainer.limit_train_batches == 5 and cfg.trainer.limit_val_batches == 3
    assert cfg.data.max_eval_samples == 200 and cfg.trainer.max_epochs == 1
    # With an experiment too (debug comes after it in the defaults list, so it limits any protocol).
    mnli = compose_cfg(["experiment=mnli_offline", "debug=fast", f"data.dir={GLUE_DIR}"])
    assert mnli.task.name == "mnli" and mnli.data.max_eval_samples == 200 and mnli.trainer.max_epochs == 1

    rows = in_process(["model=tiny", "debug=fast", f"data.dir={GLUE_DIR}", "trainer.accelerator=cpu",
                       "trainer.devices=1", "trainer.enable_progress_bar=false", "threads=1",
                       "eval_batch_sizes=[1,32]", f"output_dir={tmp_path / 'run'}",
                       f"results_csv={tmp_path / 'results.csv'}"])
    assert [r["n_examples"] for r in rows] == [200, 200]
    assert all(r["n_examples"] == "200" for r in read_rows(str(tmp_path / "results.csv")))
    with open(tmp_path / "run" / "predictions_validation_bs1.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 200
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 5  # limit_train_batches, not an epoch of 67k sentences


# ------------------------------------------------------------------------------------------------ items 2, 3
def test_missing_train_file_names_the_file_and_the_offline_protocol(tmp_path):
    t0 = time.perf_counter()
    line = one_error_line(run_script("train.py", ["task=mnli", f"data.dir={GLUE_DIR}"], tmp_path))
    elapsed = time.perf_counter() - t0
    assert f"{GLUE_DIR}/MNLI/train.tsv: file not found" in line
    assert "experiment=mnli_offline" in line
    assert elapsed < 10, elapsed  # checked before the model, tokenizer and data are loaded
    assert "error:" in (tmp_path / "hydra" / "FAILED").read_text()  # the run folder says it failed

    from eat.config import DataConfig, TaskConfig

    with pytest.raises(DataError, match=r"QQP/train.tsv: file not found.*experiment=qqp_offline"):
        check_sources(TaskConfig(name="qqp"), DataConfig(dir=str(GLUE_DIR)), ["train", "validation"])
    with pytest.raises(DataError, match=r"RTE/dev.tsv: file not found.*data.dir/RTE/.*README: Data"):
        check_sources(TaskConfig(name="rte"), DataConfig(dir=str(GLUE_DIR)), ["validation"])
    check_sources(TaskConfig(name="mnli"), DataConfig(dir=str(GLUE_DIR), split_files={
        "train": str(GLUE_DIR / "MNLI" / "dev_mismatched.tsv")}), ["train", "validation_matched"])  # the protocol


def test_offline_hub_ends_at_once_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("EAT_GLUE_DIR", raising=False)
    t0 = time.perf_counter()
    line = one_error_line(run_script("train.py", ["task=sst2"], tmp_path))
    assert time.perf_counter() - t0 < 10
    assert "HF_HUB_OFFLINE=1" in line and "data.dir" in line

    from eat.config import DataConfig, TaskConfig

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"hub \(127.0.0.1:9\) cannot be reached.*data.dir"):
        check_sources(TaskConfig(name="sst2"), DataConfig(), ["train", "validation"])
    assert time.perf_counter() - t0 < 5


# ------------------------------------------------------------------------------------------------ item 4, checkpoints
@pytest.fixture(scope="module")
def exit_ckpt(tmp_path_factory):
    """A model=tiny, mechanism=exit checkpoint trained with the default callbacks."""
    d = tmp_path_factory.mktemp("ckpt")
    in_process(tiny_overrides(d, "mechanism=exit", "threads=1"))
    return d / "run" / "checkpoints" / "best.ckpt"


def test_checkpoint_is_weights_only_and_carries_its_configs(exit_ckpt):
    assert sorted(p.name for p in exit_ckpt.parent.iterdir()) == ["best.ckpt"]  # no last.ckpt by default
    ckpt = torch.load(exit_ckpt, map_location="cpu", weights_only=False)
    assert "optimizer_states" not in ckpt and "lr_schedulers" not in ckpt
    assert ckpt["eat_config"]["model"]["name"] == "tiny" and ckpt["eat_config"]["model"]["hidden_size"] == 64
    assert ckpt["eat_config"]["task"]["name"] == "sst2" and ckpt["eat_config"]["mechanism"]["name"] == "exit"
    assert any(".mechanisms.exit." in k for k in ckpt["state_dict"])

    # Resuming needs the optimizer state: one clear error that names the way forward.
    with pytest.raises(ConfigError, match=r"weights-only checkpoint.*callbacks=resumable.*init_ckpt="):
        in_process([*TINY, f"data.dir={GLUE_DIR}", "mechanism=exit", f"ckpt_path={exit_ckpt}",
                    f"output_dir={exit_ckpt.parent.parent / 'resume'}"])


def test_resumable_callbacks_keep_optimizer_state_and_last(tmp_path):
    cfg = compose_cfg(tiny_overrides(tmp_path, "callbacks=resumable"))
    assert cfg.callbacks.model_checkpoint.save_weights_only is False and cfg.callbacks.model_checkpoint.save_last


def test_eval_takes_model_and_mechanism_from_the_checkpoint(exit_ckpt, tmp_path):
    for sub in "abc":
        (tmp_path / sub).mkdir()
    base = [f"data.dir={GLUE_DIR}", "data.max_eval_samples=24", "trainer.enable_progress_bar=false", "threads=1",
            "eval_batch_sizes=[8]", f"ckpt_path={exit_ckpt}", f"results_csv={tmp_path / 'results.csv'}"]
    # No model= and no mechanism=: both come from the checkpoint (tiny, exit), not the defaults (minilm_l6, p+s+e).
    p = run_script("eval.py", base, tmp_path / "a")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "[eat] from the checkpoint: model=tiny mechanism=exit" in p.stdout
    rows = read_rows(str(tmp_path / "results.csv"))
    assert [(r["model"], r["mechanism"], r["n_examples"]) for r in rows] == [("tiny", "exit", "24")]
    # One copy of each log line, no advertisements, and the [eat] lines in the run's log file.
    assert p.stdout.count("GPU available") == 1 and "💡" not in p.stdout + p.stderr
    log = (tmp_path / "a" / "hydra" / "eval.log").read_text()
    assert "[eat] validation" not in log and "[eat] sst2 validation mechanism=exit bs=8" in log

    # The mechanism is only a default: the static model of the same checkpoint.
    p = run_script("eval.py", [*base, "mechanism=none"], tmp_path / "b")
    assert p.returncode == 0, p.stderr[-3000:]
    assert read_rows(str(tmp_path / "results.csv"))[-1]["mechanism"] == "none"

    # A model that contradicts the checkpoint: one line, exit 2, no rows, and the folder says it failed.
    p = run_script("eval.py", [*base, "model=minilm_l6"], tmp_path / "c")
    line = one_error_line(p)
    assert "model=minilm_l6 does not match the checkpoint" in line and "model=tiny" in line
    assert len(read_rows(str(tmp_path / "results.csv"))) == 2
    assert "does not match" in (tmp_path / "c" / "hydra" / "FAILED").read_text()
    assert "does not match" in (tmp_path / "c" / "hydra" / "eval.log").read_text()


def test_a_checkpoint_refuses_a_selection_split_it_was_not_trained_with(exit_ckpt, tmp_path):
    ckpt = torch.load(exit_ckpt, map_location="cpu", weights_only=False)
    assert ckpt["eat_config"]["selection"] == {"selection_examples": 2000, "selection_seed": 20251014,
                                               "selection_unit": "row"}
    base = [*TINY, f"data.dir={GLUE_DIR}", f"ckpt_path={exit_ckpt}", "eval_batch_sizes=[8]",
            f"output_dir={tmp_path / 'run'}", f"results_csv={tmp_path / 'results.csv'}"]
    # Choosing a point on another split's selection rows would score it on rows the model trained on: refused
    # before any result, with the key, both values and the fix.
    with pytest.raises(ConfigError, match=r"data.selection_unit='sentence' does not match the checkpoint .*"
                                          r"trained with data.selection_unit='row'.*add data.selection_unit=row"):
        in_process([*base, "data.selection_unit=sentence", "task.eval_splits=[selection]"], "eval")
    assert not (tmp_path / "results.csv").exists()
    # Dev is no part of the selection split: evaluating it is not checked.
    rows = in_process([*base, "data.selection_examples=100"], "eval")
    assert len(rows) == 1 and rows[0]["split"] == "validation"


def test_old_checkpoints_without_configs_still_evaluate(exit_ckpt, tmp_path):
    ckpt = torch.load(exit_ckpt, map_location="cpu", weights_only=False)
    del ckpt["eat_config"]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    rows = in_process([*TINY, f"data.dir={GLUE_DIR}", "mechanism=exit", f"ckpt_path={old}", "eval_batch_sizes=[8]",
                       f"output_dir={tmp_path / 'run'}", f"results_csv={tmp_path / 'results.csv'}"], "eval")
    assert len(rows) == 1 and rows[0]["model"] == "tiny"


# ------------------------------------------------------------------------------------------------ item 5
def test_latency_warning_flags_stalls_and_short_warmup():
    steady = [10.0 + 0.1 * (i % 5) for i in range(100)]
    assert latency_warning(steady) == ""
    stalled = steady[:97] + [300.0, 310.0, 320.0]
    assert "p99" in latency_warning(stalled) and "warm-up" not in latency_warning(stalled)
    cold = [60.0] * 5 + steady[5:]
    assert "warm-up too short" in latency_warning(cold)
