"""Invalid configs stop before any compute: non-zero exit, a message naming the key, the bad value and what
is allowed, no results row and no checkpoint.

Most cases run in-process (compose the real configs, call the real `eat.runner.run`): same code path as
train.py, without ~5 s of imports per case. A few representative ones run train.py as a subprocess to check
the exit code and what the user sees. `data.dir` points at a folder that does not exist, so a config that
slipped through validation would fail later with a different (data) error and the test would say so.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from tests.conftest import TINY, compose_cfg, run_script
from eat.config import ConfigError


def overrides(tmp_path: Path, *extra: str):
    return [*TINY, f"data.dir={tmp_path / 'no-data-here'}", f"output_dir={tmp_path / 'run'}",
            f"results_csv={tmp_path / 'results.csv'}", *extra]


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "results.csv").exists(), "a results row was written for an invalid config"
    assert not list(tmp_path.rglob("*.ckpt")), "a checkpoint was written for an invalid config"


# (overrides, strings the message must contain: the key, the bad value, the allowed values or range)
RANGE_CASES = {
    "keep_ratio_0": (["mechanism=prune", "mechanism.prune.keep_ratios=[0,0.7]"],
                     ["mechanism.prune.keep_ratios", "0.0", "(0, 1]"]),
    "keep_ratio_1.5": (["mechanism=prune", "mechanism.prune.keep_ratios=[0.7,1.5]"],
                       ["mechanism.prune.keep_ratios", "1.5", "(0, 1]"]),
    "keep_ratios_count": (["mechanism=prune", "mechanism.prune.keep_ratios=[0.7]"],
                          ["mechanism.prune.keep_ratios", "[0.7]", "one ratio per pruning layer"]),
    "prune_layer_beyond_reference": (["mechanism=prune", "mechanism.prune.layers=[2,7]"],
                                     ["mechanism.prune.layers", "7", "[1, reference_depth=6]"]),
    # [5, 6] of 6 maps to layers 3 and 4 of the 4-layer tiny model: 4 is the last layer (checked in the
    # runner against the model's depth, before the tokenizer or any data is loaded)
    "prune_layer_beyond_depth": (["mechanism=prune", "mechanism.prune.layers=[5,6]"],
                                 ["mechanism.prune.layers", "[5, 6]", "4-layer model", "before the last layer"]),
    "prune_criterion": (["mechanism=prune", "mechanism.prune.criterion=random"],
                        ["mechanism.prune.criterion", "'random'", "attention, norm"]),
    "window_0": (["mechanism=sparse", "mechanism.sparse.window=0"], ["mechanism.sparse.window", "0", ">= 1"]),
    "exit_threshold_1.5": (["mechanism=exit", "mechanism.exit.threshold=1.5"],
                           ["mechanism.exit.threshold", "1.5", "(0, 1]"]),
    "entropy_threshold_-1": (["mechanism=exit", "mechanism.exit.criterion=entropy", "mechanism.exit.threshold=-1"],
                             ["mechanism.exit.threshold", "-1.0", "[0, 1]"]),
    "exit_layer_beyond_depth": (["mechanism=exit", "mechanism.exit.layers=[2,9]"],
                                ["mechanism.exit.layers", "9", "[1, 3]"]),
    "exit_criterion": (["mechanism=exit", "mechanism.exit.criterion=maybe"],
                       ["mechanism.exit.criterion", "'maybe'", "confidence, entropy, patience"]),
    "mode": (["mechanism.mode=fast"], ["mechanism.mode", "'fast'", "compute, mask"]),
    "eval_batch_size_0": (["eval_batch_sizes=[0]"], ["eval_batch_sizes", "[0]", ">= 1"]),
    "batch_size_0": (["data.batch_size=0"], ["data.batch_size", "0", ">= 1"]),
    "lr_-1": (["optim.lr=-1"], ["optim.lr", "-1.0", "> 0"]),
    "warmup_1": (["optim.warmup_ratio=1.0"], ["optim.warmup_ratio", "1.0", "[0, 1)"]),
    "split_slice": (["+data.split_slices.train=a:b"], ["data.split_slices.train", "'a:b'", '"start:stop"']),
    "eval_split": (["task.eval_splits=[foo]"], ["task.eval_splits", "'foo'", "train, validation"]),
    "data_source": (["data.source=s3"], ["data.source", "'s3'", "auto, hub, tsv, parquet"]),
    "accelerator": (["trainer.accelerator=tpu"], ["trainer.accelerator", "'tpu'", "cpu"]),
    "dropout": (["model.dropout=1.0"], ["model.dropout", "1.0", "[0, 1)"]),
    "heads": (["model.num_heads=5"], ["model.hidden_size", "64", "divisible by model.num_heads=5"]),
    # `+key=value` lifts Hydra's struct check; the schema check in to_run_config still rejects the key
    "appended_unknown_key": (["+model.hiddn_size=3"], ["model.hiddn_size", "3", "allowed keys", "hidden_size"]),
    "exit_on_regression": (["task=stsb", "mechanism=exit"], ["mechanism.exit", "regression"]),
}


@pytest.mark.parametrize("case", list(RANGE_CASES))
def test_invalid_value_is_rejected_before_compute(case, tmp_path):
    from eat.runner import run

    extra, expected = RANGE_CASES[case]
    cfg = compose_cfg(overrides(tmp_path, *extra))
    with pytest.raises(ConfigError) as err:
        run(cfg)
    for s in expected:
        assert s in str(err.value), f"{case}: {s!r} not in message {str(err.value)!r}"
    assert_nothing_written(tmp_path)


# Hydra rejects these while composing (train.py exits 1 with Hydra's message).
COMPOSE_CASES = {
    "unknown_mechanism": (["mechanism=foo"], MissingConfigException,
                          ["mechanism/foo", "Available options in 'mechanism'", "prune+sparse+exit", "none"]),
    "unknown_task": (["task=foo"], MissingConfigException, ["task/foo", "Available options in 'task'", "mnli"]),
    "unknown_key": (["model.hiddn_size=3"], ConfigCompositionException, ["model.hiddn_size"]),
    "wrong_type": (["data.batch_size=abc"], ConfigCompositionException, ["data.batch_size=abc"]),
}


@pytest.mark.parametrize("case", list(COMPOSE_CASES))
def test_hydra_rejects_unknown_names_and_types(case, tmp_path):
    extra, exc, expected = COMPOSE_CASES[case]
    with pytest.raises(exc) as err:
        compose_cfg(overrides(tmp_path, *extra))
    msg = str(err.value) + str(err.value.__cause__ or "")
    for s in expected:
        assert s in msg, f"{case}: {s!r} not in message {msg!r}"


def test_eval_requires_checkpoint(tmp_path):
    from eat.runner import run

    with pytest.raises(ConfigError, match="ckpt_path"):
        run(compose_cfg(overrides(tmp_path), config_name="eval"))
    assert_nothing_written(tmp_path)


# What a user sees: train.py as its own process.
SUBPROCESS_CASES = {
    # Hydra: exit 1, lists the available mechanisms
    "unknown_mechanism": (["mechanism=foo"], 1, ["Could not find 'mechanism/foo'", "Available options in 'mechanism'",
                                                 "prune+sparse+exit"]),
    # Hydra: exit 1, names the key and the schema it is not in
    "unknown_key": (["model.hiddn_size=3"], 1, ["Key 'hiddn_size' not in 'ModelConfig'", "full_key: model.hiddn_size"]),
    # Hydra: exit 1, names the key, the value and the type it expected
    "wrong_type": (["data.batch_size=abc"], 1, ["Value 'abc'", "Integer", "full_key: data.batch_size"]),
    # ours (a range checked against the model's depth), exit 2 and one line; the other range checks end
    # the same way (eat/errors.py) and are covered in-process above
    "exit_layers_depth": (["mechanism=exit", "mechanism.exit.layers=[2,9]"], 2,
                          ["error: mechanism.exit.layers=[2, 9]", "outside [1, 3]"]),
}


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_train_py_exits_nonzero(case, tmp_path):
    extra, code, expected = SUBPROCESS_CASES[case]
    p = run_script("train.py", overrides(tmp_path, *extra), tmp_path, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == code, f"{case}: exit {p.returncode}, expected {code}\n{out[-3000:]}"
    for s in expected:
        assert s in out, f"{case}: {s!r} not in output\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    assert_nothing_written(tmp_path)
