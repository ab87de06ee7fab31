"""Choose an operating point on held-out data:
    python -m eat.select [budget=0.5] [speed=time|flops] [grid=default|smoke] -- ckpt_path=PATH task=sst2 [...]
(before `--`: conf/select.yaml's keys; after it: the eval.py overrides every configuration is built with)

1. Every point of the grid (conf/select.yaml) and the static model are evaluated on the `selection` split
   (rows of the training data the model never trained on; eat.data.glue.split_selection).
2. A point is feasible when its score is at most `budget` points below the static model's on that split
   (the evaluated checkpoint with mechanism=none, or `reference=PATH`: another checkpoint, e.g. the static
   fine-tune a jointly trained EAT model started from; with `reference_keep_layers=K` it is the smaller static
   model of K layers, peer=truncated, so budget=0 asks for the fastest point at least as accurate as that model).
   With `confidence` > 0 (accuracy only) it must be so with that one-sided confidence: the lower bound of the
   paired difference (per-example correct minus static's correct; mean - z * std / sqrt(n)) is within budget.
   Why: choosing the fastest point that passes a noisy filter picks points whose selection score was lucky,
   so on dev they lose more than on selection (RESULTS 3.8: 7 of 9 chosen points did).
3. speed=flops: the feasible point with the largest FLOPs reduction wins. speed=time: the `candidates`
   feasible points with the largest FLOPs reductions are timed against the static model by the declared
   harness (eat.bench: interleaved, same batches, median of >= 5 passes), and the fastest wins.
4. The winner's mechanism block is written to `out`; `eval.py operating_point=OUT` evaluates it (on dev,
   once), and its rows carry operating_point_source=selection. Every evaluated point goes to a table beside it
   (`selection.csv`), so the choice can be checked.
"""
from __future__ import annotations

import csv
import itertools
import os
import sys
from typing import Dict, List, Optional, Tuple

import torch


def expand_grid(grid: Dict[str, List[str]]) -> List[Tuple[str, List[str]]]:
    """(label, overrides) for every point: each grid entry is the product of its overrides' sweep values
    ("key=a,b,c" sweeps, as in a Hydra multirun; "key=v" is fixed)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from eat.config import ConfigError

    parser = OverridesParser.create()
    points = []
    for name, entry in grid.items():
        try:
            parsed = parser.parse_overrides(list(entry))
        except Exception as e:  # a malformed override: name the entry
            raise ConfigError(f"grid.{name}={list(entry)}: {str(e).splitlines()[0]}") from None
        axes = []
        for o in parsed:
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            axes.append([f"{o.get_key_element()}={v}" for v in values])
        for combo in itertools.product(*axes):
            points.append((" ".join(combo), list(combo)))
    return points


def evaluate_point(label: str, overrides: List[str], split: str, batch_size: int) -> Dict:
    """Score and FLOPs of one configuration on `split` (one pass, batch-invariant: predictions do not depend
    on the batch size), built by the same path as eval.py."""
    from eat import bench, results
    from eat.data.tasks import TASKS

    b = bench.build(label, overrides, split)
    ds = b.dm.splits[split]
    if len(ds) == 0:
        from eat.config import ConfigError

        raise ConfigError(f"split={split!r} is empty: set data.selection_examples > 0")
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=b.dm._collate())
    step = bench.inference_step(b.module)
    batches = list(loader)
    recs = bench.records([step(x) for x in batches], batches)
    spec = TASKS[b.rc.task.name]
    m = bench.metrics(spec, recs)
    summ = results.summarize(recs, b.module.encoder.c.num_layers)
    order = sorted(range(len(recs["idx"])), key=lambda i: recs["idx"][i])  # align points example by example
    correct = [int(recs["pred"][i] == recs["label"][i]) for i in order]
    return {"label": label, "overrides": overrides, "score": m[spec.metrics[0]], "metric": spec.metrics[0],
            "idx": [recs["idx"][i] for i in order], "correct": correct,
            "flops_reduction": summ["flops_reduction"], "avg_exit_layer": summ["avg_exit_layer"],
            "avg_token_retention": summ["avg_token_retention"], "n": len(recs["idx"]), "built": b}


def paired_difference(static: Dict, point: Dict) -> Tuple[float, float]:
    """Mean and standard error of the per-example difference (point correct - static correct): both models see
    the same rows, so only the rows where they differ add variance."""
    import statistics

    if point["idx"] != static["idx"]:
        raise ValueError(f"{point['label']}: evaluated on other rows than the static model")
    d = [a - b for a, b in zip(point["correct"], static["correct"])]
    se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else 0.0
    return sum(d) / len(d), se


def delta_lower(static: Dict, point: Dict, confidence: float) -> float:
    """One-sided lower confidence bound of the point's accuracy minus static's (a fraction)."""
    import statistics

    mean, se = paired_difference(static, point)
    return mean - statistics.NormalDist().inv_cdf(confidence) * se if confidence > 0 else mean


def feasible_point(static: Dict, point: Dict, budget: float, confidence: float) -> bool:
    if point.get("metric", "accuracy") == "accuracy":  # in selection.csv: any confidence can be judged later
        point["delta_se"] = paired_difference(static, point)[1]
    if confidence > 0:
        point["delta_lower"] = delta_lower(static, point, confidence)
        return point["delta_lower"] >= -budget / 100 - 1e-12
    return point["score"] >= static["score"] - budget / 100 - 1e-12


def choose(static: Dict, points: List[Dict], budget: float, speed: str, candidates: int,
           time_fn=None, confidence: float = 0.0) -> Tuple[Optional[Dict], List[Dict]]:
    """The chosen point (None if no point is feasible) and every point annotated with `feasible` (and
    `speedup` where timed). `time_fn(points) -> {label: speed-up}` times candidates against the static model."""
    for p in points:
        p["feasible"] = feasible_point(static, p, budget, confidence)
    feasible = sorted((p for p in points if p["feasible"]), key=lambda p: (-p["flops_reduction"], -p["score"]))
    if not feasible:
        return None, points
    if speed == "flops":
        return feasible[0], points
    timed = feasible[:candidates]
    speedups = time_fn(timed)
    for p in timed:
        p["speedup"] = speedups[p["label"]]
    return max(timed, key=lambda p: (p["speedup"], p["score"])), points


def write_operating_point(path: str, task: str, chosen: Dict, static: Dict, ckpt: str, split: str,
                          budget: float, speed: str, confidence: float = 0.0, reference: Optional[str] = None,
                          reference_keep_layers: Optional[int] = None) -> None:
    """The chosen mechanism block, as `eval.py operating_point=PATH` reads it (eat.config.apply_operating_point)."""
    from omegaconf import OmegaConf

    b = chosen["built"]
    doc = OmegaConf.create({
        "task": task,
        "operating_point_source": "selection",
        "mechanism": OmegaConf.to_container(b.cfg.mechanism, resolve=True),
        "chosen": {"overrides": chosen["overrides"], "split": split, "n_examples": chosen["n"],
                   "metric": chosen["metric"], "score": round(chosen["score"], 6),
                   "static_score": round(static["score"], 6), "reference": reference,
                   **({"reference_keep_layers": reference_keep_layers} if reference_keep_layers else {}),
                   "budget_points": budget,
                   "confidence": confidence, **({"delta_lower": round(chosen["delta_lower"], 6)}
                                                 if "delta_lower" in chosen else {}), "speed": speed,
                   "flops_reduction": round(chosen["flops_reduction"], 4),
                   **({"speedup": round(chosen["speedup"], 4)} if "speedup" in chosen else {}), "ckpt_path": ckpt},
    })
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("# Written by python -m eat.select: chosen on the held-out selection split, never on dev.\n")
        f.write(f"# Evaluate it with: python eval.py ckpt_path={ckpt} operating_point={path}\n")
        f.write(OmegaConf.to_yaml(doc))
    os.replace(tmp, path)


def write_table(path: str, static: Dict, points: List[Dict]) -> None:
    cols = ["label", "score", "delta_se", "delta_lower", "flops_reduction", "avg_exit_layer", "avg_token_retention",
            "feasible", "speedup", "n"]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for p in [dict(static, label="static (mechanism=none)", feasible=True), *points]:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in p.items() if k in cols})
    os.replace(tmp, path)


def split_argv(argv: List[str]) -> Tuple[List[str], List[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    from omegaconf import OmegaConf

    from eat import bench
    from eat.build import compose
    from eat.config import ConfigError, SelectConfig, check_known_keys
    from eat.errors import exit_on_user_error
    from eat.runner import set_env_defaults

    set_env_defaults()
    own, common = split_argv(argv)
    with exit_on_user_error():
        cfg = compose(own, config_name="select")
        check_known_keys(cfg)
        try:
            sc: SelectConfig = OmegaConf.to_object(cfg)
        except Exception as e:  # OmegaConf wraps our ConfigError; surface the readable part
            raise ConfigError(str(e.__cause__ if isinstance(e.__cause__, ConfigError) else e)) from e
        torch.set_num_threads(sc.threads)
        from eat.data.tasks import TASKS

        grid = expand_grid(sc.grid)
        task = compose(common).task.name
        from eat.config import _choice

        _choice("split", sc.split, TASKS[task].splits)
        if sc.confidence > 0 and TASKS[task].metrics[0] != "accuracy":
            raise ConfigError(f"confidence={sc.confidence}: the paired bound needs per-example correctness, but "
                              f"task={task} is scored by {TASKS[task].metrics[0]}; allowed: confidence=0")
        base = list(common)
        # settings of a mechanism part (mechanism.exit.pooling=pair: the heads' shape) are for the grid's points;
        # the static model has no parts to set
        plain = [o for o in base if not o.lstrip("+~").startswith("mechanism.")]
        # reference=PATH: the budget is measured against that static model (appended, so it wins over the
        # ckpt_path after `--`); its selection split must be the one the EAT checkpoint held out (eat.bench.build
        # checks each checkpoint's record against the data settings)
        ref_model = [f"model.keep_layers={sc.reference_keep_layers}"] if sc.reference_keep_layers else []
        static = evaluate_point("static", [*plain, "mechanism=none",
                                           *([f"ckpt_path={sc.reference}"] if sc.reference else []),
                                           *ref_model],
                                sc.split, sc.batch_size)
        print(f"[eat] select: static {static['metric']}={100 * static['score']:.2f} on {static['n']} {sc.split} rows"
              + (f" (reference={' '.join([sc.reference, *ref_model])})" if sc.reference else "") + "; "
              f"{len(grid)} points, budget {sc.budget} points"
              + (f" at one-sided confidence {sc.confidence}" if sc.confidence > 0 else ""))
        points = []
        for label, overrides in grid:
            p = evaluate_point(label, [*base, *overrides], sc.split, sc.batch_size)
            print(f"[eat]   {label}: {100 * p['score']:.2f}, FLOPs reduction {p['flops_reduction']:.2f}x, "
                  f"exit layer {p['avg_exit_layer']:.2f}")
            if not feasible_point(static, p, sc.budget, sc.confidence):
                p.pop("built")  # never timed or written: free its model (a 28-point grid held ~3.5 GB otherwise)
            points.append(p)

        def time_fn(cands: List[Dict]) -> Dict[str, float]:
            steps = {"static": bench.inference_step(static["built"].module),
                     **{p["label"]: bench.inference_step(p["built"].module) for p in cands}}
            ds = static["built"].dm.splits[sc.split]
            batches = list(torch.utils.data.DataLoader(ds, batch_size=sc.batch_size, shuffle=False,
                                                       collate_fn=static["built"].dm._collate()))
            timing = bench.interleave(steps, batches, sc.passes)
            import statistics

            return {p["label"]: statistics.median(timing.ratios(p["label"], "static")) for p in cands}

        chosen, points = choose(static, points, sc.budget, sc.speed, sc.candidates, time_fn, sc.confidence)
        write_table(os.path.join(os.path.dirname(os.path.abspath(sc.out)), "selection.csv"), static, points)
        if chosen is None:
            at = f" at confidence {sc.confidence}" if sc.confidence > 0 else ""
            raise ConfigError(f"budget={sc.budget}: no point of the grid is within {sc.budget} points of the static "
                              f"model on {sc.split}{at} ({100 * static['score']:.2f}); widen the grid or the budget"
                              + (" or lower confidence" if at else ""))
        write_operating_point(sc.out, task, chosen, static, chosen["built"].rc.ckpt_path, sc.split, sc.budget,
                              sc.speed, sc.confidence, sc.reference, sc.reference_keep_layers)
    how = f"speed-up {chosen['speedup']:.2f}x (median of {sc.passes} passes)" if "speedup" in chosen else \
        f"FLOPs reduction {chosen['flops_reduction']:.2f}x"
    print(f"[eat] select: chose {chosen['label']}: {100 * chosen['score']:.2f} (static {100 * static['score']:.2f}), "
          f"{how}; wrote {sc.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
