"""A checkpoint carries the model, task and mechanism it was trained with; eval.py reads them from it.

Training stores the resolved `model`, `task` and `mechanism` config blocks in the checkpoint (key
`eat_config`, written by EATModule.on_save_checkpoint). At evaluation a block the user did not choose is
taken from the checkpoint; a model or task the user did choose must match the checkpoint's, else one
ConfigError line. The mechanism is only a default: evaluating an exit-trained checkpoint with
mechanism=none is normal use. Checkpoints without `eat_config` (older ones) are used as before.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from eat.config import ConfigError

KEY = "eat_config"
BLOCKS = ("model", "task", "mechanism")
SELECTION = "selection"  # the data.selection_* settings, stored beside the blocks (eat.data.glue.selection_record)
# Model fields that decide the weights' shapes and meaning (dropout and the tokenizer path do not).
MODEL_FIELDS = ("name", "pretrained", "arch", "vocab_size", "hidden_size", "num_layers", "num_heads",
                "intermediate_size", "max_position_embeddings")
CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def blocks_of(cfg: DictConfig) -> Dict[str, dict]:
    return {b: OmegaConf.to_container(cfg[b], resolve=True) for b in BLOCKS}


def read_blocks(path: str) -> Optional[Dict[str, dict]]:
    if not os.path.isfile(path):
        return None  # load_checkpoint_weights reports the missing file
    ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return ckpt.get(KEY) if isinstance(ckpt, dict) else None


def primary_defaults() -> Dict[str, str]:
    """The group choices of conf/train.yaml's defaults list (task: sst2, model: minilm_l6, ...)."""
    path = os.path.join(CONF_DIR, "train.yaml")
    if not os.path.isfile(path):
        return {}
    out = {}
    for item in OmegaConf.load(path).get("defaults", []):
        if isinstance(item, (dict, DictConfig)):
            out.update({str(k): v for k, v in item.items()})
    return out


def chosen_groups(overrides: Optional[List[str]], choices: Optional[Dict[str, str]]) -> set:
    """Groups the user chose: named in an override (model=tiny, model.hidden_size=64, +task.x=...), or whose
    choice differs from the primary config's default (an experiment's `override /task: mnli`). Unknown (not
    under a Hydra app): every group counts as chosen."""
    if overrides is None:
        return set(BLOCKS)
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    out = {b for b in BLOCKS if any(k == b or k.startswith(b + ".") for k in keys)}
    defaults = primary_defaults()
    for b in BLOCKS:
        if choices and b in defaults and choices.get(b) not in (None, defaults[b]):
            out.add(b)
    return out


def hydra_overrides():
    try:
        from hydra.core.hydra_config import HydraConfig

        h = HydraConfig.get()
        return list(h.overrides.task), dict(h.runtime.choices)
    except Exception:  # not under a Hydra app (configs composed in-process)
        return None, None


def apply_checkpoint_config(cfg: DictConfig, path: str) -> List[str]:
    """Fill the blocks the user did not choose from the checkpoint at `path`; raise ConfigError where a chosen
    model or task contradicts it. Returns the names of the blocks taken from the checkpoint."""
    saved = read_blocks(path)
    if not saved:
        return []
    overrides, choices = hydra_overrides()
    chosen = chosen_groups(overrides, choices)
    here = blocks_of(cfg)
    fix = "drop that override: eval.py reads the model and task from the checkpoint"
    if "model" in chosen and "model" in saved:
        for f in MODEL_FIELDS:
            a, b = here["model"].get(f), saved["model"].get(f)
            if a != b:
                raise ConfigError(f"model={here['model'].get('name')} does not match the checkpoint {path}, trained "
                                  f"with model={saved['model'].get('name')} (model.{f}: {a!r} here, {b!r} there); {fix}")
    if "task" in chosen and "task" in saved and here["task"].get("name") != saved["task"].get("name"):
        raise ConfigError(f"task={here['task'].get('name')} does not match the checkpoint {path}, trained on "
                          f"task={saved['task'].get('name')}; {fix}")
    taken = [b for b in BLOCKS if b not in chosen and b in saved and saved[b] != here[b]]
    with open_dict(cfg):
        for b in taken:  # typed blocks: merge the saved values onto the group's schema
            cfg[b] = OmegaConf.merge(OmegaConf.structured(OmegaConf.get_type(cfg[b])), saved[b])
    return taken


def guard_selection(dm, path: Optional[str]) -> None:
    """Make the datamodule `dm` check, whenever it reads training or selection rows, that its selection split is the
    one the checkpoint at `path` was trained with (eat.data.glue.check_selection). Checkpoints without the record
    (older ones, weights-only files) are not checked."""
    saved = (read_blocks(path) or {}).get(SELECTION) if path else None
    if saved:
        dm.expect_selection(saved, path)
