"""The one declared benchmark harness: every speed-up EAT quotes is measured here.

    python -m eat.bench --ckpt CKPT --task sst2 --batch-sizes 1 32 --passes 5 \
        --config static mechanism=none --config exit mechanism=exit mechanism.exit.threshold=0.9 \
        --results experiments/results/X.csv --predictions experiments/results/predictions/X

The method, the same for every claim:
- one process; every configuration is built by the same path as `eval.py` (`build`), from a checkpoint and
  Hydra overrides, and runs on the same batches of the same split (file order, never shuffled);
- configurations are interleaved batch by batch and the order rotates from batch to batch, so drift of a
  shared machine hits them all alike;
- what is timed is the whole inference step of a configuration: the forward with its exit decisions,
  pruning and compaction (all inside the encoder) and the prediction (argmax);
- after a warm-up, at least 5 passes over the split; a pass's time is the sum of its batch times;
- the speed-up of a configuration is the baseline's pass time over its own, computed per pass: the row records
  the median and the min-max of these per-pass ratios; the baseline is the first configuration;
- threads are fixed (`--threads`, default 2 or the machine's core count if lower) and recorded.
Rows have the usual results columns (eat.results.COLUMNS), so `python -m eat.report` reads them; per-example
predictions go to one folder per configuration (`--predictions`), named after the whole label.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

MIN_PASSES = 5


# --------------------------------------------------------------------------------------------- building
@dataclass
class Built:
    """One configuration, ready to run: the module as eval.py would evaluate it, and its validated config."""

    label: str
    overrides: List[str]
    rc: object  # eat.config.RunConfig
    cfg: object  # the composed DictConfig (after operating_point is applied)
    module: object  # eat.lit_module.EATModule, in eval mode
    dm: object  # eat.data.glue.GLUEDataModule (shared between configurations of the same data)


_DATA_CACHE: Dict[str, object] = {}


def _datamodule(rc, tokenizer, split: str):
    """One tokenised data module per (task, data settings, split): configurations share their batches."""
    import json
    from dataclasses import asdict

    from eat.data.glue import GLUEDataModule

    key = json.dumps([rc.task.name, rc.task.max_length, asdict(rc.data), split, rc.model.tokenizer or
                      rc.model.pretrained], sort_keys=True, default=str)
    if key not in _DATA_CACHE:
        from dataclasses import replace

        dm = GLUEDataModule(replace(rc.task, eval_splits=[split]), rc.data, tokenizer, rc.seed)
        dm.setup("test")
        _DATA_CACHE[key] = dm
    return _DATA_CACHE[key]


def build(label: str, overrides: Sequence[str], split: Optional[str] = None) -> Built:
    """Build one configuration the way eval.py does (validate, build, load the weights, prepare), for `split`
    (default: the task's first evaluation split). Bad overrides raise ConfigError/DataError/CheckpointError."""
    from eat.build import build_for_eval, check_against_model, compose, load_tokenizer
    from eat.config import to_run_config
    from eat.data.tasks import TASKS
    from eat.runner import resolve_config

    cfg = resolve_config(compose([*overrides, "logger=none", "output_dir=unused"]))
    rc = to_run_config(cfg)
    check_against_model(rc)
    split = split or (rc.task.eval_splits or TASKS[rc.task.name].eval_splits)[0]
    dm = _datamodule(rc, load_tokenizer(rc.model), split)
    return Built(label, list(overrides), rc, cfg, build_for_eval(rc, dm, [split]), dm)


# --------------------------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """What the interleaved passes measured, per configuration label."""

    names: List[str]
    pass_ms: Dict[str, List[float]]  # total ms of each pass
    batch_ms: Dict[str, List[float]]  # every batch of every pass
    order: List[List[str]]  # the order the configurations ran in, per batch (first pass)
    first: Dict[str, List[object]] = field(default_factory=dict)  # per-batch outputs of the first timed pass

    def ratios(self, name: str, baseline: str) -> List[float]:
        """Per-pass speed-ups of `name` against `baseline` (baseline time / own time, pass by pass)."""
        return [b / t for b, t in zip(self.pass_ms[baseline], self.pass_ms[name])]


def interleave(steps: Dict[str, Callable[[object], object]], batches: Sequence[object], passes: int = MIN_PASSES,
               warmup: int = 3) -> Timing:
    """Run every step on every batch, configurations interleaved batch by batch with the order rotating;
    `warmup` untimed batches first; then `passes` timed passes. Returns the per-pass and per-batch times and
    each step's outputs from the first timed pass."""
    if passes < 1:
        raise ValueError(f"passes={passes}: must be >= 1")
    names = list(steps)
    n = len(names)
    for b in list(batches)[:warmup]:
        for name in names:
            steps[name](b)
    t = Timing(names, {k: [] for k in names}, {k: [] for k in names}, [], {k: [] for k in names})
    for p in range(passes):
        total = dict.fromkeys(names, 0.0)
        for i, b in enumerate(batches):
            order = names[i % n:] + names[:i % n]  # who goes first rotates from batch to batch
            if p == 0:
                t.order.append(order)
            for name in order:
                t0 = time.perf_counter()
                out = steps[name](b)
                dt = (time.perf_counter() - t0) * 1e3
                total[name] += dt
                t.batch_ms[name].append(dt)
                if p == 0:
                    t.first[name].append(out)
        for name in names:
            t.pass_ms[name].append(total[name])
    return t


def inference_step(module, device: str = "cpu") -> Callable[[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]:
    """The whole inference step of an eval module: encoder forward (exits, pruning, compaction) + prediction.
    On CUDA the step ends with a synchronize, so the host clock around it measures the device's work."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    @torch.inference_mode()
    def step(batch):
        out = module.encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        pred = module.predictions(out.logits)
        sync()
        return {"pred": pred, "exit_layer": out.exit_layer, "tokens_in": out.tokens_in,
                "tokens_final": out.tokens_final, "gflops": out.flops / 1e9, "gflops_static": out.static_flops / 1e9}

    return step


# --------------------------------------------------------------------------------------------- rows
def slug(label: str) -> str:
    """A folder name for a label: every character outside [A-Za-z0-9.=+_-] becomes '_' (labels stay distinct)."""
    return re.sub(r"[^A-Za-z0-9.=+_-]", "_", label)


def records(outs: List[Dict[str, torch.Tensor]], batches: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, list]:
    from eat.results import PREDICTION_FIELDS

    cols = {f: [] for f in PREDICTION_FIELDS}
    for o, b in zip(outs, batches):
        cols["idx"] += b["idx"].cpu().tolist()
        cols["label"] += b["labels"].cpu().tolist()
        for f in PREDICTION_FIELDS[2:]:
            cols[f] += o[f].cpu().tolist()
    return cols


def metrics(spec, recs: Dict[str, list]) -> Dict[str, float]:
    from eat.lit_module import task_metrics

    m = task_metrics(spec)
    dtype = torch.float if spec.is_regression else torch.long
    m.update(torch.tensor(recs["pred"], dtype=dtype), torch.tensor(recs["label"], dtype=dtype))
    return {k: float(v) for k, v in m.compute().items()}


def percentile(xs: List[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def rows_for(timing: Timing, built: Dict[str, Built], batches, split: str, batch_size: int, run_id: str,
             pred_root: Optional[str], rel_to: Optional[str], device: str = "cpu") -> List[Dict]:
    """One results row per configuration (and per-example prediction files when `pred_root` is given)."""
    from omegaconf import OmegaConf

    from eat import results
    from eat.data.tasks import TASKS
    from eat.results import PREDICTION_FIELDS

    base = timing.names[0]
    n = sum(int(b["labels"].shape[0]) for b in batches)
    rows = []
    for name in timing.names:
        b = built[name]
        recs = records(timing.first[name], batches)
        out_dir = ""
        if pred_root:
            folder = os.path.join(pred_root, slug(name))
            results.write_csv_atomic(results.prediction_path(folder, split, batch_size), list(PREDICTION_FIELDS), recs)
            out_dir = os.path.relpath(folder, rel_to) if rel_to else folder
        ratios = timing.ratios(name, base)
        pass_med = statistics.median(timing.pass_ms[name])
        rows.append(results.result_row(
            b.rc, OmegaConf.to_container(b.cfg, resolve=True), run_id=run_id, split=split, batch_size=batch_size,
            device=device.split(":")[0], metrics=metrics(TASKS[b.rc.task.name], recs), records=recs,
            num_layers=b.module.encoder.c.num_layers, output_dir=out_dir, harness="eat.bench",
            latency_ms_mean=statistics.fmean(timing.batch_ms[name]),
            latency_ms_p50=percentile(timing.batch_ms[name], 50), latency_ms_p90=percentile(timing.batch_ms[name], 90),
            latency_ms_p99=percentile(timing.batch_ms[name], 99), latency_ms_per_example=pass_med / n,
            throughput_eps=n / (pass_med / 1e3), passes=len(timing.pass_ms[name]), speedup_vs=base,
            speedup=statistics.median(ratios), speedup_min=min(ratios), speedup_max=max(ratios)))
    return rows


def summary_lines(rows: List[Dict]) -> List[str]:
    """A markdown table of one batch size's rows: the harness's medians with the per-pass range beside them."""
    from eat.tables import markdown_table

    r0 = rows[0]
    head = (f"{r0['task']} {r0['split']}, bs={r0['batch_size']}, {r0['n_examples']} examples x {r0['passes']} passes "
            f"(interleaved, order rotating), {r0['threads']} threads; speed-up vs `{r0['speedup_vs']}`: median of "
            f"the per-pass ratios [min-max]")
    metric = "accuracy" if r0.get("accuracy") is not None else next(k for k in ("f1", "mcc", "pearson") if r0.get(k))
    body = [[r["label"], f"{100 * r[metric]:.2f}", f"{r['latency_ms_per_example']:.3f}",
             f"{r['speedup']:.2f}x [{r['speedup_min']:.2f}-{r['speedup_max']:.2f}]",
             f"{r['avg_exit_layer']:.2f}", f"{r['avg_token_retention']:.3f}", r["operating_point_source"]]
            for r in rows]
    return [head, "", markdown_table(["configuration", metric, "ms/example (median pass)", "speed-up", "exit layer",
                                      "token retention", "operating point"], body)]


# --------------------------------------------------------------------------------------------- main
def benchmark(configs: List[List[str]], common: List[str], batch_sizes: List[int], passes: int,
              split: Optional[str] = None, max_examples: Optional[int] = None, warmup: int = 3,
              device: str = "cpu") -> Dict[int, tuple]:
    """Build every configuration (label + overrides, after the `common` overrides), then time them on the same
    batches for each batch size. Returns {batch size: (timing, built, batches, split)}."""
    built: Dict[str, Built] = {}
    for label, *overrides in configs:
        if label in built:
            from eat.config import ConfigError

            raise ConfigError(f"--config {label!r} is given twice: labels must be unique")
        built[label] = build(label, [*common, *overrides], split)
    first = next(iter(built.values()))
    split = split or first.dm.eval_split_names[0]
    for b in built.values():  # the same batches for every configuration
        if b.dm is not first.dm:
            from eat.config import ConfigError

            raise ConfigError(f"--config {b.label!r} reads other data than {first.label!r} (task or data settings "
                              "differ): configurations of one comparison must share their batches")
    ds = first.dm.splits[split]
    out = {}
    for bs in batch_sizes:
        first.dm.eval_batch_size = bs
        loader = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=False, collate_fn=first.dm._collate())
        batches = [{k: t.to(device) for k, t in b.items()} for i, b in enumerate(loader)
                   if max_examples is None or i * bs < max_examples]
        steps = {k: inference_step(v.module.to(device), device) for k, v in built.items()}
        out[bs] = (interleave(steps, batches, passes, warmup), built, batches, split)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eat.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", help="checkpoint of every configuration (a configuration may set its own ckpt_path=)")
    p.add_argument("--task", default="sst2")
    p.add_argument("--glue", default=os.environ.get("EAT_GLUE_DIR"), help="GLUE folder (data.dir)")
    p.add_argument("--split", default=None, help="split to time on (default: the task's first evaluation split)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--passes", type=int, default=MIN_PASSES)
    p.add_argument("--warmup", type=int, default=3, help="untimed batches before the passes")
    p.add_argument("--max-examples", type=int, default=None, help="only the first N examples (default: all)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--device", default="cpu", help="cpu or cuda (CUDA steps end with a synchronize)")
    p.add_argument("--common", nargs="*", default=[], help="Hydra overrides given to every configuration")
    p.add_argument("--config", nargs="+", action="append", required=True, metavar=("LABEL", "OVERRIDE"),
                   help="a label and its Hydra overrides (as for eval.py); the first is the baseline")
    p.add_argument("--results", default=None, help="append one row per configuration and batch size to this CSV")
    p.add_argument("--predictions", default=None, help="folder for per-example predictions (one subfolder each)")
    p.add_argument("--summary", default=None, help="append the markdown tables and the command to this file")
    a = p.parse_args(argv)
    if len(a.config) < 2:
        p.error("give at least two --config: a baseline and one to compare")
    if a.passes < MIN_PASSES:
        p.error(f"--passes {a.passes}: the declared harness makes at least {MIN_PASSES} passes")
    from eat.errors import exit_on_user_error
    from eat.report import add_labels  # noqa: F401  (imported early: a broken report module fails before timing)
    from eat import results
    from eat.runner import set_env_defaults

    set_env_defaults()
    torch.set_num_threads(a.threads)
    common = [f"task={a.task}", *([f"data.dir={a.glue}"] if a.glue else []), *([f"ckpt_path={a.ckpt}"] if a.ckpt
                                                                                else []), *a.common]
    with exit_on_user_error():  # a mistyped configuration: one clear line, exit 2, nothing written
        measured = benchmark(a.config, common, a.batch_sizes, a.passes, a.split, a.max_examples, a.warmup, a.device)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    rel_to = os.path.dirname(os.path.abspath(a.results)) if a.results else None
    text = [f"# {time.strftime('%Y-%m-%d')}: " + " ".join(shlex.quote(x) for x in ["python", "-m", "eat.bench",
                                                                                   *(argv or sys.argv[1:])]), ""]
    for bs, (timing, built, batches, split) in measured.items():
        rows = rows_for(timing, built, batches, split, bs, run_id, a.predictions, rel_to, a.device)
        if a.results:
            results.append_rows(a.results, rows)
        text += summary_lines([{**r, "label": lbl} for r, lbl in zip(rows, timing.names)]) + [""]
    print("\n".join(text))
    if a.summary:
        with open(a.summary, "a") as f:
            f.write("\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
