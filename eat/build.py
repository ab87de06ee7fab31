"""The one build path: config -> tokenizer, encoder (+ mechanisms), LightningModule, weights, eval-time swaps.

train.py / eval.py (eat.runner), the benchmark harness (eat.bench), eat.select and every experiment script build
their models here, so what a script times is exactly what eval.py evaluates.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from eat.config import ConfigError, MechanismConfig, ModelConfig, RunConfig
from eat.data.tasks import TASKS
from eat.mechanisms import build_mechanisms
from eat.model.config import EncoderConfig
from eat.model.encoder import Encoder
from eat.model.hub import load_hf_weights, read_weights, resolve_checkpoint
from eat.logs import say

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
_TOKENIZERS: Dict[str, object] = {}


def compose(overrides: Sequence[str], config_name: str = "eval"):
    """The composed Hydra config, exactly as `eval.py OVERRIDES` (or train.py: config_name="train") composes it.
    A mistyped override raises one ConfigError line naming it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from eat.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"{' '.join(overrides)}: {str(e).splitlines()[0]}") from None


def load_tokenizer(cfg: ModelConfig):
    """The model's tokenizer; one per model config and process (loading it is the slow part of a build)."""
    key = repr((cfg.tokenizer, cfg.pretrained))
    if key not in _TOKENIZERS:
        from transformers import AutoTokenizer

        _TOKENIZERS[key] = AutoTokenizer.from_pretrained(resolve_checkpoint(cfg.tokenizer or cfg.pretrained),
                                                         use_fast=True)
    return _TOKENIZERS[key]


def build_encoder(cfg: ModelConfig, mechanism: MechanismConfig, num_labels: int, tokenizer=None) -> Encoder:
    """Our encoder with its mechanisms; the pretrained backbone's weights when `cfg.pretrained` is set."""
    c = EncoderConfig.from_model(cfg, num_labels, tokenizer)
    model = Encoder(c, build_mechanisms(mechanism, c))
    if cfg.pretrained is not None:
        load_hf_weights(model, read_weights(resolve_checkpoint(cfg.pretrained), cfg.sha256))
    return model


def check_against_model(rc: RunConfig) -> None:
    """Checks that need the model's depth (mechanism layers are rescaled to it), before the tokenizer or any data
    is loaded: build the mechanisms alone, for the model's shape, and let them raise ConfigError."""
    c = EncoderConfig.from_model(rc.model, TASKS[rc.task.name].num_labels)
    build_mechanisms(rc.mechanism, c)


def build_module(rc: RunConfig, tokenizer=None, eval_splits: Optional[List[str]] = None,
                 config_blocks: Optional[Dict] = None):
    """The LightningModule of a run: encoder, task metrics per eval split, optimiser settings."""
    from eat.lit_module import EATModule

    spec = TASKS[rc.task.name]
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(rc.model)
    encoder = build_encoder(rc.model, rc.mechanism, spec.num_labels, tokenizer)
    splits = eval_splits or rc.task.eval_splits or spec.eval_splits
    return EATModule(encoder, spec, rc.optim, splits, config_blocks=config_blocks)


def build_teacher(rc: RunConfig, tokenizer=None) -> Encoder:
    """The frozen teacher of `rc.teacher_ckpt`: this run's model without mechanisms, with that checkpoint's weights
    (its exit heads, if it has any, are not used: the teacher is the model that runs to the last layer)."""
    spec = TASKS[rc.task.name]
    teacher = build_encoder(rc.model, MechanismConfig(), spec.num_labels, tokenizer)
    from eat.lit_module import EATModule
    from eat.config import OptimConfig

    holder = EATModule(teacher, spec, OptimConfig(), rc.task.eval_splits or spec.eval_splits)
    load_checkpoint_weights(holder, rc.teacher_ckpt)
    return teacher.eval().requires_grad_(False)


def build_trainer(rc: RunConfig, **kwargs):
    """The run's `lightning.pytorch.Trainer` (rc.trainer, the `trainer` config group); `kwargs` are what the caller
    owns: loggers, callbacks, and for evaluation one device."""
    import dataclasses

    from hydra.utils import instantiate

    return instantiate(dataclasses.asdict(rc.trainer), **kwargs)


def load_checkpoint_weights(module, path: str, fresh_mechanisms: bool = False) -> None:
    """Load trained weights. Mechanism weights the checkpoint has but this config does not use are ignored
    (evaluate an exit-trained model without exits); weights this config needs but the checkpoint lacks
    are an error (exit heads cannot be evaluated untrained), unless `fresh_mechanisms` (init_ckpt)."""
    if not os.path.isfile(path):
        raise ConfigError(f"ckpt_path={path!r}: file not found")
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a weight of another shape: e.g. exit heads trained with another pooling
        shapes = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
        if not shapes:
            raise
        raise ConfigError(f"ckpt_path={path!r} holds weights of another shape than this config builds: {shapes[:3]} "
                          f"(was it trained with the same model and mechanism, e.g. mechanism.exit.pooling?)") from None
    if fresh_mechanisms:
        missing = [k for k in missing if ".mechanisms." not in k]
    if missing:
        raise ConfigError(f"ckpt_path={path!r} lacks weights this config needs: {missing[:6]} "
                          f"(was it trained with the same model and mechanism?)")
    bad = [k for k in unexpected if ".mechanisms." not in k]
    if bad:
        raise ConfigError(f"ckpt_path={path!r} has weights this model does not know: {bad[:6]}")


def prepare_for_eval(rc: RunConfig, module, dm) -> None:
    """After the weights are in: swap in the peer, or fit the exit temperatures, then switch the encoder to
    the runtime (eat/runtimes.py), as the config asks."""
    if rc.peer is not None:
        from eat.peers import build_peer

        module.encoder = build_peer(rc.peer, module.encoder.eval(), rc.runtime)
    ex = rc.mechanism.exit
    if ex is not None and ex.calibration_split is not None:
        from eat.calibration import calibrate_exits

        fitted = calibrate_exits(module.encoder, dm.head_dataloader(ex.calibration_split, ex.calibration_examples))
        say(f"[eat] exit temperatures fitted on the first {ex.calibration_examples} rows of "
            f"{ex.calibration_split}: " + " ".join(f"L{k}={t:.3f}" for k, t in fitted.items()))
    if rc.runtime.name != "eager":
        module.encoder = apply_runtime(module.encoder, rc.runtime)


def apply_runtime(encoder: Encoder, cfg) -> torch.nn.Module:
    """Switch a loaded encoder (weights final) to the runtime `cfg` (RuntimeConfig): runtime.graph=whole and
    optimized return the module that replaces it (eat/whole_graph.py, eat/optimized_graph.py), every other runtime
    changes it in place (eat.runtimes.apply_layer_runtime). The dispatch lives here, above the runtime modules, so
    that they import eat.runtimes without eat.runtimes importing them back."""
    encoder.eval()
    if cfg.name in ("ort", "ort_int8") and cfg.graph == "whole":  # the whole forward as one ORT graph
        from eat.whole_graph import WholeGraphEncoder

        return WholeGraphEncoder(encoder, cfg)
    if cfg.name in ("ort", "ort_int8") and cfg.graph == "optimized":  # the peer's graph with the exits grafted in
        from eat.optimized_graph import OptimizedGraphEncoder

        return OptimizedGraphEncoder(encoder, cfg)
    from eat.runtimes import apply_layer_runtime

    return apply_layer_runtime(encoder, cfg)


def build_for_eval(rc: RunConfig, dm, eval_splits: Optional[List[str]] = None, config_blocks: Optional[Dict] = None):
    """What eval.py evaluates: the module with the checkpoint's weights (rc.ckpt_path), then prepare_for_eval."""
    module = build_module(rc, eval_splits=eval_splits, config_blocks=config_blocks)
    if rc.ckpt_path:
        from eat.ckpt_config import guard_selection

        load_checkpoint_weights(module, rc.ckpt_path)
        guard_selection(dm, rc.ckpt_path)  # eat.select reads the selection split: it must be the trained one's
    prepare_for_eval(rc, module, dm)
    return module.eval()
