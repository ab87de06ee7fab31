"""Which runtime for the layer loop is fastest on this CPU? (issue 14; results in experiments/runtimes_tried.md)

Every configuration is built by the same path as eval.py (eat.runner: build_module -> prepare_for_eval, so
`runtime=` and `peer=` are applied exactly as in an evaluation) from the real MiniLM-L6 backbone with its
pretrained weights and a random classification head (speed does not depend on the head; the same seed gives
every configuration the same head). All configurations run the same SST-2 dev batches, interleaved batch by
batch with the order rotating per batch, ORT sessions with spinning off and torch's thread count.
The median over passes of each configuration's total time is reported, per example.

Usage: .venv/bin/python experiments/try_runtimes.py --threads 1 [--n1 200] [--passes 3]
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

from eat.build import build_module, compose, load_checkpoint_weights, load_tokenizer, prepare_for_eval  # noqa: E402
from eat.config import to_run_config  # noqa: E402
from eat.tables import markdown_table  # noqa: E402

# label -> eval overrides (as the harness would pass them)
CONFIGS = {
    "eager fp32, static": ["mechanism=none"],
    "torch INT8 (runtime=int8), static": ["mechanism=none", "runtime=int8"],
    "ORT per layer fp32 (runtime=ort), static": ["mechanism=none", "runtime=ort"],
    "ORT per layer INT8 (runtime=ort_int8), static": ["mechanism=none", "runtime=ort_int8"],
    "peer=hf_static": ["mechanism=none", "peer=hf_static"],
    "peer=hf_int8": ["mechanism=none", "peer=hf_int8"],
    "peer=ort_fp32 (whole graph)": ["mechanism=none", "peer=ort_fp32"],
    "peer=ort_int8 (whole graph)": ["mechanism=none", "peer=ort_int8"],
    # a mechanism that needs the received attention (the ORT layer's second output) and re-pads the batch
    "eager fp32, prune+sparse": ["mechanism=prune+sparse"],
    "torch INT8, prune+sparse": ["mechanism=prune+sparse", "runtime=int8"],
    "ORT per layer fp32, prune+sparse": ["mechanism=prune+sparse", "runtime=ort"],
    "ORT per layer INT8, prune+sparse": ["mechanism=prune+sparse", "runtime=ort_int8"],
}


def build(overrides, threads, ckpt=None):
    """A configuration's encoder, ready to call, by eval.py's build path; `ckpt`: load these trained weights
    (None: pretrained backbone and a random head)."""
    cfg = compose([*overrides, f"ckpt_path={ckpt or 'unused'}", f"threads={threads}",
                   "output_dir=/tmp/eat-try-runtimes", "trainer.accelerator=cpu"])
    rc = to_run_config(cfg)
    tok = load_tokenizer(rc.model)
    torch.manual_seed(0)  # the same random head in every configuration
    module = build_module(rc, tok, ["validation"])
    if ckpt:
        load_checkpoint_weights(module, ckpt)
    module.eval()
    prepare_for_eval(rc, module, None)
    return module.encoder.eval(), tok


def batches(tok, sentences, bs):
    out = []
    for s in range(0, len(sentences), bs):
        enc = tok(sentences[s:s + bs], padding=True, truncation=True, max_length=128, return_tensors="pt")
        out.append((enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n1", type=int, default=200, help="dev sentences timed at bs=1")
    ap.add_argument("--n32", type=int, default=872, help="dev sentences timed at bs=32")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--glue", default=str(ROOT.parent / "shared" / "data" / "glue"))
    ap.add_argument("--only", nargs="*", help="labels of CONFIGS to run (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.glue, "SST-2", "dev.tsv")) as f:
        sentences = [r["sentence"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    labels = args.only or list(CONFIGS)
    models, tok = {}, None
    for name in labels:
        t0 = time.perf_counter()
        models[name], tok = build(CONFIGS[name], args.threads)
        print(f"built {name} in {time.perf_counter() - t0:.1f}s", flush=True)
    print(f"threads={torch.get_num_threads()} passes={args.passes}")
    ref = labels[0]
    # logits are compared with the eager fp32 configuration of the same mechanism
    same = {k: next(r for r in labels if CONFIGS[r][0] == CONFIGS[k][0]) for k in labels}
    rows = {}
    for bs, n in ((1, args.n1), (32, args.n32)):
        data = batches(tok, sentences[:n], bs)
        times = {k: [] for k in labels}
        max_diff = {k: 0.0 for k in labels}
        with torch.inference_mode():
            for _ in range(2):  # warm-up: first calls allocate
                for k in labels:
                    models[k](*data[0])
            for p in range(args.passes):
                tot = {k: 0.0 for k in labels}
                for b, batch in enumerate(data):
                    order = labels[(b + p) % len(labels):] + labels[:(b + p) % len(labels)]
                    logits = {}
                    for k in order:
                        t0 = time.perf_counter()
                        out = models[k](*batch)
                        tot[k] += time.perf_counter() - t0
                        logits[k] = out.logits
                    if p == 0:
                        for k in labels:
                            max_diff[k] = max(max_diff[k], float((logits[k] - logits[same[k]]).abs().max()))
                for k in labels:
                    times[k].append(tot[k])
        for k in labels:
            rows.setdefault(k, {})[bs] = (statistics.median(times[k]) / n * 1e3, max_diff[k])
    cells = []
    for k in labels:
        (a, da), (b, db) = rows[k][1], rows[k][32]
        cells.append([k, f"{a:.2f}", f"{rows[ref][1][0] / a:.2f}x", f"{b:.2f}", f"{rows[ref][32][0] / b:.2f}x",
                      f"{da:.1e} / {db:.1e}"])
    print("\n" + markdown_table(["configuration", f"bs=1 ms/example (first {args.n1})", f"x vs {ref}",
                                  f"bs=32 ms/example ({args.n32})", f"x vs {ref}",
                                  "max abs logit diff vs the first row of the same mechanism (bs=1 / bs=32)"], cells))


if __name__ == "__main__":
    main()
