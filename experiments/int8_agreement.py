"""INT8 schemes for EAT's runtimes against fp32 (issue 14): agreement on SST-2 dev, batch invariance, speed.

Every configuration is built by eval.py's path (`eat.bench.build`: compose -> operating_point -> build_module ->
load the checkpoint -> prepare_for_eval, so `runtime=`, `peer=` and `operating_point=` act as in an evaluation).
Two models of the same seed: the static fine-tune (mechanism=none) and EAT (exit heads) at the operating point
chosen on the selection split. For each configuration, on the 872 SST-2 dev sentences (file order):
- agreement: share of predictions equal to fp32 eager of the same model, at bs=64 (the batches carry padding);
- invariance: each of the first --n-inv sentences alone (bs=1) against its row in the bs=64 batches: predictions, exit layers and
  kept tokens per layer all equal, counted in sentences;
- speed (--speed): ms per example at bs=1 (the first --n1 sentences) and bs=32 (the first --n32 sentences),
  configurations interleaved batch by batch with the order rotating (eat.bench.interleave, the declared
  harness's timing loop), median over --passes passes, --threads threads.

Usage: .venv/bin/python experiments/int8_agreement.py --seed 42 [--speed] \\
           [--out experiments/results/int8_schemes_seed42.md]
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]  # the checkout: default folders of outputs, results and data
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before eat imports transformers
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from eat.bench import build, interleave  # noqa: E402
from eat.results import prediction_path  # noqa: E402
from eat.tables import table_head, table_row  # noqa: E402

# label -> overrides on top of the model's own (static: mechanism=none; EAT: operating_point=FILE)
STATIC = {
    "fp32 eager": [],
    "runtime=int8 (token; default)": ["runtime=int8"],
    "runtime=int8 runtime.activation=tensor (old)": ["runtime=int8", "runtime.activation=tensor"],
    "runtime=ort_int8 (token; default)": ["runtime=ort_int8"],
    "runtime=ort_int8 runtime.activation=tensor (old)": ["runtime=ort_int8", "runtime.activation=tensor"],
    "runtime=int8 heads fp32": ["runtime=int8", "runtime.fp32_linears=[head,heads]"],
    "runtime=int8 ffn_out+heads fp32": ["runtime=int8", "runtime.fp32_linears=[ffn_out,head,heads]"],
    "runtime=ort_int8 ffn_out fp32": ["runtime=ort_int8", "runtime.fp32_linears=[ffn_out]"],  # heads: fp32 already
    "runtime=ort (fp32)": ["runtime=ort"],
    "peer=hf_int8": ["peer=hf_int8"],
    "peer=ort_int8": ["peer=ort_int8"],
}
EAT = {k: v for k, v in STATIC.items() if not k.startswith("peer=")}  # peers are static models
SPEED = ["fp32 eager", "runtime=int8 (token; default)", "runtime=int8 runtime.activation=tensor (old)",
         "runtime=ort_int8 (token; default)", "runtime=ort_int8 runtime.activation=tensor (old)"]


def tokenize(tok, sentences, bs):
    out = []
    for s in range(0, len(sentences), bs):
        e = tok(sentences[s:s + bs], padding=True, truncation=True, max_length=128, return_tensors="pt")
        out.append({"input_ids": e["input_ids"], "attention_mask": e["attention_mask"],
                    "token_type_ids": e["token_type_ids"]})
    return out


@torch.inference_mode()
def run(enc, batches):
    """Predictions, exit layers and kept tokens per layer (padded to the model's depth) of all rows, in order."""
    pred, exit_, kept = [], [], []
    for b in batches:
        out = enc(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        pred.append(out.logits.argmax(-1))
        exit_.append(out.exit_layer)
        kept.append(out.tokens_kept)
    return torch.cat(pred), torch.cat(exit_), torch.cat(kept)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--outputs", default=str(ROOT / "outputs" / "sst2"), help="folder of static_seedS / eat_seedS")
    ap.add_argument("--glue", default=str(ROOT.parent / "shared" / "data" / "glue"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--speed", action="store_true", help="also time the configurations of SPEED")
    ap.add_argument("--speed-only", action="store_true", help="only time them (no agreement / invariance)")
    ap.add_argument("--n-inv", type=int, default=200, help="sentences run alone for the invariance check")
    ap.add_argument("--n1", type=int, default=100)
    ap.add_argument("--n32", type=int, default=256)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated labels to run (default: all)")
    ap.add_argument("--models", default="static,EAT")
    ap.add_argument("--out", default=None, help="also write the tables (markdown) here")
    ap.add_argument("--committed", action="store_true", help="only the table of the harness's committed "
                    "predictions (experiments/results/predictions/sst2_runtimes/seedS): no model is run")
    args = ap.parse_args()
    args.speed = args.speed or args.speed_only
    torch.set_num_threads(args.threads)
    if args.committed:
        table = committed_table(str(ROOT / "experiments" / "results" / "predictions" / "sst2_runtimes" / f"seed{args.seed}"))
        print("\n".join(table))
        if args.out:
            Path(args.out).write_text("\n".join(table) + "\n")
        return
    with open(os.path.join(args.glue, "SST-2", "dev.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    sentences = [r["sentence"] for r in rows]
    labels = torch.tensor([int(r["label"]) for r in rows])
    op = ROOT / "experiments" / "results" / "sst2_select" / f"seed{args.seed}" / "operating_point.yaml"
    models = {
        "static": ([f"ckpt_path={args.outputs}/static_seed{args.seed}/checkpoints/best.ckpt", "mechanism=none"], STATIC),
        "EAT": ([f"ckpt_path={args.outputs}/eat_seed{args.seed}/checkpoints/best.ckpt", f"operating_point={op}"], EAT),
    }
    common = ["task=sst2", f"data.dir={args.glue}", f"seed={args.seed}", f"threads={args.threads}",
              "trainer.accelerator=cpu"]
    only = set(filter(None, args.only.split(",")))
    lines = [f"SST-2 dev (872), seed {args.seed}, {args.threads} thread(s), torch {torch.__version__}",
             "", *table_head(["model", "configuration", "dev acc", "% predictions = fp32 (bs=64)",
                              "bs=1 vs bs=64: sentences with equal prediction / exit layer / kept tokens (of the first "
                              f"{args.n_inv})", "all equal"])]
    print("\n".join(lines), flush=True)
    speed_lines = []
    for model, (base, configs) in models.items():
        if model not in args.models.split(","):
            continue
        ref = None
        built = {}
        for label, extra in configs.items():
            if only and label not in only and label != "fp32 eager" or args.speed_only and label not in SPEED:
                continue
            b = build(label, [*common, *base, *extra])
            enc = b.module.encoder
            tok = b.dm.tokenizer if hasattr(b.dm, "tokenizer") else None
            if tok is None:
                from eat.build import load_tokenizer
                tok = load_tokenizer(b.rc.model)
            if args.speed_only:
                if label in SPEED:
                    built[label] = enc
                continue
            big = tokenize(tok, sentences, 64)
            one = tokenize(tok, sentences[:args.n_inv], 1)
            t0 = time.time()
            p64, e64, k64 = run(enc, big)
            p1, e1, k1 = run(enc, one)
            if ref is None:
                ref = p64
            n = args.n_inv
            same = [(p1 == p64[:n]), (e1 == e64[:n]), (k1 == k64[:n]).all(1)]
            all_same = same[0] & same[1] & same[2]
            line = table_row([model, label, f"{float((p64 == labels).float().mean()) * 100:.2f}",
                              f"{float((p64 == ref).float().mean()) * 100:.2f}",
                              " / ".join(str(int(s.sum())) for s in same), "yes" if bool(all_same.all()) else "no"])
            print(line, f"({time.time() - t0:.0f}s)", flush=True)
            lines.append(line)
            if args.speed and label in SPEED:
                built[label] = enc
            else:
                del b, enc
        if args.speed and built:
            speed_lines += timing(model, built, tok, sentences, args)
    if speed_lines:
        print("\n".join(speed_lines), flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(([] if args.speed_only else lines + [""]) + speed_lines) + "\n")


def committed_table(folder: str):
    """The old per-call INT8 schemes and the peers, from the per-example predictions that the declared harness
    wrote for experiments/sst2_runtimes.sh (every configuration on the EAT checkpoint: mechanism=none rows are
    its static backbone): agreement with the fp32 configuration of the same mechanisms at bs=1 and bs=32, and
    bs=1 vs bs=32 equality of predictions, exit layers and final kept tokens (872 sentences)."""
    def load(c, bs):
        with open(prediction_path(os.path.join(folder, c), "validation", bs)) as f:
            return list(csv.DictReader(f))
    out = ["", f"From the harness's predictions in {os.path.relpath(folder, ROOT)} (2 threads; the INT8 runtimes with "
           "runtime.activation=token, the default, and `_tensor`: the per-call scheme):", "",
           *table_head(["configuration", "fp32 reference", "dev acc bs=32", "% = fp32 bs=1", "% = fp32 bs=32",
                        "bs=1 vs bs=32: equal prediction / exit layer / final kept tokens (of 872)"])]
    pairs = [("hf_int8", "static_eager"), ("ort_int8", "static_eager"), ("eat_int8", "eat_eager"),
             ("eat_ort_int8", "eat_eager"), ("eat_int8_tensor", "eat_eager"), ("eat_ort_int8_tensor", "eat_eager"),
             ("eat_ort", "eat_eager"), ("eat_eager", "eat_eager")]
    for c, ref in pairs:
        if not os.path.isdir(os.path.join(folder, c)):
            continue
        a1, a32, r1, r32 = load(c, 1), load(c, 32), load(ref, 1), load(ref, 32)
        agree = [sum(x["pred"] == y["pred"] for x, y in zip(a, r)) / len(a) * 100 for a, r in ((a1, r1), (a32, r32))]
        same = [sum(x[k] == y[k] for x, y in zip(a1, a32)) for k in ("pred", "exit_layer", "tokens_final")]
        acc = sum(x["pred"] == x["label"] for x in a32) / len(a32) * 100
        out.append(table_row([c, ref, f"{acc:.2f}", f"{agree[0]:.2f}", f"{agree[1]:.2f}", " / ".join(map(str, same))]))
    return out


def timing(model, built, tok, sentences, args):
    """ms per example at bs=1 and bs=32, interleaved (eat.bench.interleave), median over passes."""
    out = []
    res = {}
    for bs, n in ((1, args.n1), (32, args.n32)):
        batches = tokenize(tok, sentences[:n], bs)

        def step(enc):
            @torch.inference_mode()
            def f(b):
                return enc(b["input_ids"], b["attention_mask"], b["token_type_ids"]).logits.argmax(-1)
            return f

        t = interleave({k: step(e) for k, e in built.items()}, batches, passes=args.passes)
        for k in built:
            res[(k, bs)] = (statistics.median(t.pass_ms[k]) / n, statistics.median(t.ratios(k, "fp32 eager")))
    old = "runtime=int8 runtime.activation=tensor (old)"
    out += ["", f"Speed, {model} model: ms per example (x = median per-pass speed-up vs fp32 eager; "
            f"bs=1: first {args.n1} dev sentences, bs=32: first {args.n32}; {args.passes} passes, interleaved)", "",
            *table_head(["configuration", "bs=1 ms/ex", "x vs eager", "x vs old int8", "bs=32 ms/ex", "x vs eager",
                         "x vs old int8"])]
    for k in built:
        cells = []
        for bs in (1, 32):
            ms, x = res[(k, bs)]
            vs_old = f"{res[(old, bs)][0] / ms:.2f}x" if (old, bs) in res else "-"
            cells += [f"{ms:.2f}", f"{x:.2f}x", vs_old]
        out.append(table_row([k, *cells]))
    return out


if __name__ == "__main__":
    main()
