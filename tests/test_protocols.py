"""The experiment protocols of experiments/RESULTS.md, composed from the real configs: the offline MNLI and
QQP splits (train and evaluation never overlap), the two-stage EAT recipe (the backbone stays frozen) and the
adapted recipe (the whole static model is fine-tuned with the mechanisms on)."""
from __future__ import annotations

import torch

from eat.config import to_run_config
from eat.data.glue import GLUEDataModule
from eat.runner import run
from tests.conftest import GLUE_DIR, compose_cfg, needs_glue, tiny_overrides


def datamodule(overrides):
    rc = to_run_config(compose_cfg([f"data.dir={GLUE_DIR}", "output_dir=unused", "logger=none", *overrides]))
    return rc, GLUEDataModule(rc.task, rc.data, tokenizer=None, seed=rc.seed)


@needs_glue
def test_qqp_offline_trains_on_the_first_30000_dev_rows_and_evaluates_on_the_rest():
    rc, dm = datamodule(["experiment=qqp_offline"])
    train, val, sel = dm.read("train"), dm.read("validation"), dm.read("selection")
    assert rc.task.name == "qqp" and dm.eval_split_names == ["validation"]
    # rows 0:30000 are the training part: 2,000 of them are held out as the selection split
    assert len(sel["label"]) == 2_000 and 30_000 - 2_000 - 50 <= len(train["label"]) <= 28_000
    assert len(val["label"]) == 10_430 and max(train["idx"] + sel["idx"]) < 30_000
    assert not set(train["idx"]) & set(val["idx"])  # disjoint rows of the same file
    assert (train["text_a"][0], train["text_b"][0]) != (val["text_a"][0], val["text_b"][0])


@needs_glue
def test_mnli_offline_trains_on_mismatched_and_evaluates_on_matched_only():
    rc, dm = datamodule(["experiment=mnli_offline"])
    assert dm.eval_split_names == ["validation_matched"] and rc.data.group_by_length
    train, val, sel = dm.read("train"), dm.read("validation_matched"), dm.read("selection")
    # dev_mismatched is the training part: 1,000 of its rows are held out as the selection split
    assert len(sel["label"]) == 1_000 and 9_832 - 1_000 - 50 <= len(train["label"]) <= 8_832
    assert len(val["label"]) == 9_815
    assert not set(zip(train["text_a"], train["text_b"])) & set(zip(val["text_a"], val["text_b"]))


def test_stage2_composes_with_a_task_protocol():
    cfg = compose_cfg(["experiment=[mnli_offline,eat_stage2]", "init_ckpt=x.ckpt", "output_dir=unused"])
    assert cfg.task.name == "mnli" and cfg.mechanism.name == "prune+sparse+exit"
    assert list(cfg.optim.trainable) == ["encoder.mechanisms"] and cfg.trainer.max_epochs == 2
    assert cfg.data.split_files.train.endswith("MNLI/dev_mismatched.tsv")


def test_adapt_composes_with_a_task_protocol_and_trains_every_parameter():
    cfg = compose_cfg(["experiment=[qqp_offline,eat_adapt]", "init_ckpt=x.ckpt", "output_dir=unused"])
    assert cfg.task.name == "qqp" and cfg.mechanism.name == "prune+sparse+exit"
    assert cfg.optim.trainable is None and cfg.init_ckpt == "x.ckpt"


@needs_glue
def test_adapt_moves_the_backbone_from_the_static_model(tmp_path):
    run(compose_cfg(tiny_overrides(tmp_path / "static", "mechanism=none", "eval_batch_sizes=[8]")))
    static_ckpt = tmp_path / "static" / "run" / "checkpoints" / "best.ckpt"
    run(compose_cfg(tiny_overrides(tmp_path / "adapt", "experiment=eat_adapt", f"init_ckpt={static_ckpt}",
                                   "eval_batch_sizes=[8]")))
    load = lambda p: torch.load(p, map_location="cpu", weights_only=False)["state_dict"]  # noqa: E731
    before, after = load(static_ckpt), load(tmp_path / "adapt" / "run" / "checkpoints" / "best.ckpt")
    assert any(".mechanisms." in k for k in after)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(".layers." in k for k in moved), "the backbone must be fine-tuned with the mechanisms on"


@needs_glue
def test_two_stage_training_changes_only_the_exit_heads(tmp_path):
    run(compose_cfg(tiny_overrides(tmp_path / "static", "mechanism=none", "eval_batch_sizes=[8]")))
    static_ckpt = tmp_path / "static" / "run" / "checkpoints" / "best.ckpt"

    def stage2(name, *extra):
        run(compose_cfg(tiny_overrides(tmp_path / name, "experiment=eat_stage2", f"init_ckpt={static_ckpt}",
                                       "eval_batch_sizes=[8]", *extra)))
        return torch.load(tmp_path / name / "run" / "checkpoints" / "best.ckpt", map_location="cpu",
                          weights_only=False)["state_dict"]

    trained, untrained = stage2("trained"), stage2("untrained", "optim.lr=1e-20")  # same seed, same initial heads, no move
    before = torch.load(static_ckpt, map_location="cpu", weights_only=False)["state_dict"]
    heads = [k for k in trained if ".mechanisms." in k]
    assert heads and set(before) == set(trained) - set(heads)
    assert all(torch.equal(before[k], trained[k]) for k in before), "stage 2 must not move the backbone"
    assert not all(torch.equal(trained[k], untrained[k]) for k in heads), "stage 2 must train the exit heads"


def test_joint_composes_with_a_task_protocol():
    cfg = compose_cfg(["experiment=[mnli_offline,eat_joint]", "init_ckpt=x.ckpt", "output_dir=unused"])
    assert cfg.mechanism.name == "exit" and cfg.teacher_ckpt == "x.ckpt" and cfg.optim.trainable is None
    assert cfg.optim.mechanism_lr == 1e-3 and cfg.mechanism.exit.distill > 0 and cfg.trainer.max_epochs == 1


def test_a_teacher_needs_distillation_and_training():
    import pytest

    from eat.config import ConfigError

    with pytest.raises(ConfigError, match=r"teacher_ckpt.*mechanism.exit.distill > 0"):
        to_run_config(compose_cfg(["mechanism=exit", "teacher_ckpt=x.ckpt", "output_dir=unused"]))
    with pytest.raises(ConfigError, match=r"teacher_ckpt.*train=false"):
        to_run_config(compose_cfg(["mechanism=exit", "mechanism.exit.distill=0.5", "teacher_ckpt=x.ckpt",
                                   "train=false", "ckpt_path=y.ckpt", "output_dir=unused"]))


@needs_glue
def test_joint_training_moves_backbone_and_heads_and_keeps_the_teacher_out_of_the_checkpoint(tmp_path):
    from eat.build import build_module
    from eat.runner import run as run_cfg

    run(compose_cfg(tiny_overrides(tmp_path / "static", "mechanism=none", "eval_batch_sizes=[8]")))
    static_ckpt = tmp_path / "static" / "run" / "checkpoints" / "best.ckpt"
    overrides = tiny_overrides(tmp_path / "joint", "experiment=eat_joint", f"init_ckpt={static_ckpt}",
                               "eval_batch_sizes=[8]")
    run_cfg(compose_cfg(overrides))
    load = lambda p: torch.load(p, map_location="cpu", weights_only=False)["state_dict"]  # noqa: E731
    before, after = load(static_ckpt), load(tmp_path / "joint" / "run" / "checkpoints" / "best.ckpt")
    assert set(after) - set(before) == {k for k in after if ".mechanisms." in k} != set()  # heads only, no teacher
    assert any(".layers." in k for k in before if not torch.equal(before[k], after[k])), "the backbone must move"
    # the heads learn at optim.mechanism_lr, every other parameter at optim.lr
    rc = to_run_config(compose_cfg(overrides))
    module = build_module(rc)
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    opt = module.configure_optimizers()["optimizer"]
    rates = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    for name, p in module.named_parameters():
        assert rates[id(p)] == (1e-3 if name.startswith("encoder.mechanisms.") else 2e-5), name
