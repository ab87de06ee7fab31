"""How many SST-2 dev predictions INT8 changes: each INT8 runtime and peer against fp32, same trained weights.

Every configuration is built by eval.py's path (experiments/try_runtimes.py `build`: build_module ->
load_checkpoint_weights -> prepare_for_eval). Dev sentences run in batches of 64 of similar length.
Prints fp32 accuracy, then per configuration: accuracy and the share of predictions equal to fp32.

Usage: PYTHONPATH=$PWD .venv/bin/python experiments/int8_agreement.py --ckpt PATH [--threads 1]
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from try_runtimes import build  # noqa: E402

CONFIGS = {
    "fp32 eager": ["mechanism=none"],
    "runtime=int8 (per-channel weights)": ["mechanism=none", "runtime=int8"],
    "runtime=int8 runtime.per_channel=false": ["mechanism=none", "runtime=int8", "runtime.per_channel=false"],
    "runtime=ort_int8 (per-channel)": ["mechanism=none", "runtime=ort_int8"],
    "runtime=ort_int8 runtime.per_channel=false": ["mechanism=none", "runtime=ort_int8", "runtime.per_channel=false"],
    "peer=hf_int8 (per-channel)": ["mechanism=none", "peer=hf_int8"],
    "peer=hf_int8 runtime.per_channel=false": ["mechanism=none", "peer=hf_int8", "runtime.per_channel=false"],
    "peer=ort_int8 (per-channel)": ["mechanism=none", "peer=ort_int8"],
    "peer=ort_int8 runtime.per_channel=false": ["mechanism=none", "peer=ort_int8", "runtime.per_channel=false"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--glue", default=str(ROOT.parent / "shared" / "data" / "glue"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.glue, "SST-2", "dev.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    labels = torch.tensor([int(r["label"]) for r in rows])
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["sentence"].split()))
    preds, batches = {}, None
    for name, overrides in CONFIGS.items():
        enc, tok = build(overrides, args.threads, args.ckpt)
        if batches is None:
            batches = [tok([rows[i]["sentence"] for i in order[s:s + 64]], padding=True, truncation=True,
                           max_length=128, return_tensors="pt") for s in range(0, len(order), 64)]
        with torch.inference_mode():
            p = torch.cat([enc(b["input_ids"], b["attention_mask"], b["token_type_ids"]).logits.argmax(-1)
                           for b in batches])
        preds[name] = torch.empty_like(p).scatter_(0, torch.tensor(order), p)
        ref = preds["fp32 eager"]
        print(f"| {name} | {float((preds[name] == labels).float().mean()) * 100:.2f} | "
              f"{float((preds[name] == ref).float().mean()) * 100:.2f} |", flush=True)


if __name__ == "__main__":
    main()
