"""Checks that need no Lightning, data or model: run by train.py / eval.py before the heavy imports, so a bad
config, a missing data file or an unreachable hub ends the run in a few seconds with one line."""
from __future__ import annotations

from typing import List

from omegaconf import DictConfig, OmegaConf

from eat.config import RunConfig, to_run_config
from eat.data.sources import DataError, check_sources
from eat.data.tasks import TASKS


def splits_read(rc: RunConfig) -> List[str]:
    """The splits this run reads: train (and selection) when training, the eval splits, a calibration split."""
    splits = list(rc.task.eval_splits or TASKS[rc.task.name].eval_splits)
    if rc.train:
        splits.insert(0, "train")
    ex = rc.mechanism.exit
    if ex is not None and ex.calibration_split is not None:
        splits.append(ex.calibration_split)
    return list(dict.fromkeys("train" if s == "selection" else s for s in splits))


def preflight(cfg: DictConfig) -> None:
    """Config values and data sources. An evaluation of a checkpoint is checked later, in eat.runner.run,
    once the checkpoint has said which task it was trained on."""
    if not cfg.train and not OmegaConf.is_missing(cfg, "ckpt_path") and cfg.ckpt_path:
        return
    rc = to_run_config(cfg)
    try:
        check_sources(rc.task, rc.data, splits_read(rc))
    except DataError:
        # Config errors come before data errors: the checks against the model's depth (they build the
        # mechanisms, so they run only here, when the data error would end the run anyway) may have a config error.
        from eat.build import check_against_model

        check_against_model(rc)
        raise
