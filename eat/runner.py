"""What `train.py` and `eval.py` do: validate the config, build the objects, fit, evaluate, write results."""
from __future__ import annotations

import os
import time
import uuid
from typing import Dict, List, Optional

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from eat import results
from eat.build import (build_module, build_teacher, build_trainer, check_against_model, load_checkpoint_weights,
                       load_tokenizer, prepare_for_eval)
from eat.callbacks.latency import LatencyCallback
from eat.config import ConfigError, RunConfig, apply_operating_point, to_run_config
from eat.data.glue import GLUEDataModule, check_sources
from eat.data.tasks import TASKS
from eat.lit_module import EATModule
from eat.logs import quiet_logging, say
from eat.preflight import splits_read


def set_env_defaults() -> None:
    """W&B offline unless the user says otherwise; no background network calls."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def check_resumable(path: str) -> None:
    """train.py ckpt_path=... resumes training: that needs the optimizer state a weights-only checkpoint lacks."""
    if not os.path.isfile(path):
        raise ConfigError(f"ckpt_path={path!r}: file not found")
    ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    if "optimizer_states" not in ckpt:
        raise ConfigError(f"ckpt_path={path!r} is a weights-only checkpoint (no optimizer state): training cannot "
                          f"resume from it. Train with callbacks=resumable to keep resumable checkpoints "
                          f"(checkpoints/last.ckpt), or start a new run from its weights with init_ckpt={path}")


def is_completed(rc: RunConfig, chash: str) -> bool:
    """True if the results table has a row for every (eval split, eval batch size) of this config: a job
    killed between two batch sizes has written only some of its rows and is not complete."""
    done = {(r.get("split"), r.get("batch_size")) for r in results.read_rows(rc.results_csv)
            if r.get("config_hash") == chash}
    splits = rc.task.eval_splits or TASKS[rc.task.name].eval_splits
    return all((s, str(bs)) in done for s in splits for bs in rc.eval_batch_sizes)


def resolve_config(cfg: DictConfig) -> DictConfig:
    """What an evaluation runs, before validation: the blocks the checkpoint carries (model, task, mechanism) where
    the user chose none, then the mechanism block of `operating_point=FILE` (eat.select). Shared by eval.py and
    the benchmark harness, so both evaluate exactly the same configuration."""
    if not cfg.train and not OmegaConf.is_missing(cfg, "ckpt_path") and cfg.ckpt_path:
        from eat.ckpt_config import apply_checkpoint_config

        taken = apply_checkpoint_config(cfg, cfg.ckpt_path)  # model/task/mechanism the user did not choose
        if taken:
            say("[eat] from the checkpoint: " + " ".join(f"{b}={cfg[b].name}" for b in taken))
    return apply_operating_point(cfg)


def run(cfg: DictConfig) -> List[Dict]:
    set_env_defaults()
    quiet_logging()
    cfg = resolve_config(cfg)
    rc = to_run_config(cfg)  # every range check runs here, before any data or model is touched
    check_against_model(rc)  # mechanism layers vs the model's depth, still before any data
    check_sources(rc.task, rc.data, splits_read(rc))  # files exist, or the hub answers: in seconds, one line
    if rc.train and rc.ckpt_path:
        check_resumable(rc.ckpt_path)
    plain = OmegaConf.to_container(cfg, resolve=True)
    chash = results.config_hash(plain)
    if rc.skip_completed and is_completed(rc, chash):
        say(f"[eat] skip: {rc.results_csv} already has rows for config_hash={chash}")
        return []
    if rc.threads:
        torch.set_num_threads(rc.threads)
    pl.seed_everything(rc.seed, workers=True, verbose=False)

    tokenizer = load_tokenizer(rc.model)
    dm = GLUEDataModule(rc.task, rc.data, tokenizer, rc.seed)
    from eat.ckpt_config import BLOCKS, SELECTION, guard_selection
    from eat.data.glue import selection_record

    guard_selection(dm, rc.init_ckpt or rc.ckpt_path)  # stage 2 and resumed runs train on their init's split
    # From here on the run is `rc`; `plain` is only its record (config hash, the blocks a checkpoint carries).
    blocks = {**{b: plain[b] for b in BLOCKS}, SELECTION: selection_record(rc.data)}
    module = build_module(rc, tokenizer, dm.eval_split_names, config_blocks=blocks)
    if rc.init_ckpt:
        load_checkpoint_weights(module, rc.init_ckpt, fresh_mechanisms=True)
    if rc.teacher_ckpt:
        module.set_teacher(build_teacher(rc, tokenizer))
        say(f"[eat] teacher (soft labels for every head, weight {rc.mechanism.exit.distill}): {rc.teacher_ckpt}")
    loggers = [instantiate(node) for node in rc.logger.values()]
    callbacks = [instantiate(node) for node in rc.callbacks.values()]
    try:
        if rc.train:
            trainer = build_trainer(rc, logger=loggers or False, callbacks=callbacks, default_root_dir=rc.output_dir)
            t0 = time.perf_counter()
            trainer.fit(module, datamodule=dm, ckpt_path=rc.ckpt_path)
            fit_s = time.perf_counter() - t0
            best = next((c.best_model_path for c in callbacks if isinstance(c, pl.callbacks.ModelCheckpoint)), "")
            if best:
                load_checkpoint_weights(module, best)
            say(f"[eat] fit took {fit_s:.0f}s; best checkpoint: {best or '(none: last weights)'}")
            if trainer.world_size > 1:
                # Evaluation and results rows are rank 0's job, on one device. Leave the process group
                # first: while it exists torchmetrics syncs metric states in `compute()` with ranks that
                # have already returned, and rank 0 fails ("Connection closed by peer").
                trainer.strategy.barrier("eat-fit-done")
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    torch.distributed.destroy_process_group()
            if trainer.global_rank != 0:
                return []
            ckpt = best or None
        else:
            if rc.ckpt_path:
                load_checkpoint_weights(module, rc.ckpt_path)
            ckpt = rc.ckpt_path
        prepare_for_eval(rc, module, dm)
        rows = evaluate(rc, plain, module, dm, loggers, callbacks, ckpt)
    finally:
        finish_wandb(loggers)
    return rows


def evaluate(rc: RunConfig, plain: Dict, module: EATModule, dm: GLUEDataModule, loggers, callbacks,
             ckpt: Optional[str]) -> List[Dict]:
    """Evaluate once per batch size in `eval_batch_sizes`; append one results row per (split, batch size)."""
    latency = next((c for c in callbacks if isinstance(c, LatencyCallback)), None) or LatencyCallback()
    trainer = build_trainer(rc, devices=1, strategy="auto", num_nodes=1, logger=loggers or False,
                            callbacks=[latency], default_root_dir=rc.output_dir)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    num_layers = module.encoder.c.num_layers
    mech = dict(plain["mechanism"])
    if rc.mechanism.exit is not None and rc.mechanism.exit.calibration_split is not None:  # record what was fitted
        from eat.calibration import exit_mechanism

        mech["exit"] = {**mech["exit"], "temperatures": [
            round(t, 4) for t in exit_mechanism(module.encoder).temperature.tolist()]}
    all_rows = []
    module.eval()
    for bs in rc.eval_batch_sizes:
        dm.eval_batch_size = bs
        trainer.test(module, datamodule=dm, verbose=False)
        per_split = module.test_results()
        rows = []
        for i, split in enumerate(dm.eval_split_names):
            res = per_split[split]
            recs = res["records"]
            results.write_csv_atomic(results.prediction_path(rc.output_dir, split, bs), list(results.PREDICTION_FIELDS),
                                     recs)
            row = results.result_row(
                rc, plain, run_id=run_id, split=split, batch_size=bs,
                # the strategy's device: `trainer.test` has moved the module back to the CPU by now
                device=trainer.strategy.root_device.type, metrics=res["metrics"], records=recs,
                num_layers=num_layers, output_dir=rc.output_dir, harness="lightning", ckpt_path=ckpt or "",
                mechanism=mech, **{k: v for k, v in latency.summary(i).items() if k in results.COLUMNS})
            rows.append(row)
            for lg in loggers:
                lg.log_metrics({f"test/{split}/bs{bs}/{k}": v for k, v in row.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)})
            say(f"[eat] {rc.task.name} {split} mechanism={rc.mechanism.name} bs={bs}: "
                + " ".join(f"{m}={res['metrics'][m]:.4f}" for m in res["metrics"])
                + (f" latency_p50={row['latency_ms_p50']:.2f}ms" if "latency_ms_p50" in row else "")
                + f" avg_exit_layer={row.get('avg_exit_layer', 0):.2f}")
            if row.get("latency_warning"):
                say(f"[eat] WARNING latency: {row['latency_warning']}")
        latency.write_csv(os.path.join(rc.output_dir, f"latency_batches_bs{bs}.csv"))
        log_latency_to_wandb(loggers, latency.rows, bs, dm.eval_split_names)
        for lg in loggers:  # trainer.test already finalised the loggers: flush the rows logged after it
            lg.save()
        results.append_rows(rc.results_csv, rows)
        all_rows.extend(rows)
    for lg in loggers:  # the final results as a W&B table (kept in the offline run folder as JSON)
        if isinstance(lg, WandbLogger):
            lg.log_table(key="results", columns=results.COLUMNS, data=[[r.get(c) for c in results.COLUMNS]
                                                                     for r in all_rows])
    return all_rows


def log_latency_to_wandb(loggers, rows: List[Dict], bs: int, split_names: List[str]) -> None:
    """Per-batch latency of one batch size as a W&B table and a line chart (latency over batches)."""
    for lg in loggers:
        if not isinstance(lg, WandbLogger):
            continue
        import wandb

        cols = ["split", "batch_idx", "ms", "tokens", "padded_length", "warmup"]
        table = wandb.Table(columns=cols, data=[[split_names[r["dataloader_idx"]], r["batch_idx"], r["ms"],
                                                 r["tokens"], r["padded_length"], r["warmup"]] for r in rows])
        lg.experiment.log({f"latency_batches/bs{bs}": table,
                           f"latency_per_batch/bs{bs}": wandb.plot.line(
                               table, "batch_idx", "ms", stroke="split", title=f"latency per batch (ms), bs={bs}")})


def finish_wandb(loggers) -> None:
    """Close the W&B run of this job, so multirun jobs never write into each other's runs."""
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        from eat.wandb_logger import finish

        finish()
