"""Where a bs=1 forward of EAT spends its time outside the layers (issue 14: the bs=1 gap to whole-graph ORT INT8).

Builds each configuration by eval.py's path (experiments/try_runtimes.py: the pretrained MiniLM-L6 backbone, the
same random head), runs one SST-2-length sentence `--n` times at bs=1 on 1 thread, prints ms per forward, and
cProfiles one (--profile, default the first). With random exit heads, `mechanism.exit.threshold=0.5` makes every example
leave at the first exit layer, so the profile is one ORT layer plus everything EAT does around it.

    .venv/bin/python experiments/profile_bs1.py [--n 200] [--top 15]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch
# a sibling script: `python experiments/profile_bs1.py` puts experiments/ first on the import path
from try_runtimes import build

WHOLE_ROW = ["runtime=ort_int8", "runtime.graph=whole", "runtime.activation=row"]
CONFIGS = {
    "EAT, runtime=ort_int8, exit after layer 1": ["mechanism=exit", "mechanism.exit.threshold=0.5", "runtime=ort_int8"],
    "peer=ort_int8 (whole graph, 6 layers)": ["mechanism=none", "peer=ort_int8"],
    # EAT's fastest runtime: one graph, INT8 with a scale per token. Its static form and a threshold no row reaches
    # give the price of the 5 exit decisions: (no exit - static) / 5 per decision
    "EAT, whole graph ORT INT8 row, exit after layer 1": ["mechanism=exit", "mechanism.exit.threshold=0.5", *WHOLE_ROW],
    "EAT, whole graph ORT INT8 row, no row exits (threshold 1.0)": ["mechanism=exit", "mechanism.exit.threshold=1.0",
                                                                    *WHOLE_ROW],
    "static, whole graph ORT INT8 row (no mechanism)": ["mechanism=none", *WHOLE_ROW],
    "peer=ort_int8_opt (ORT's transformer fusions, 6 layers)": ["mechanism=none", "peer=ort_int8_opt"],
}
SENTENCE = "a gripping , funny and touching film that works on every level ."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="forwards timed (and profiled) per configuration")
    ap.add_argument("--top", type=int, default=15, help="profile rows shown (by own time)")
    ap.add_argument("--profile", type=int, default=0, help="which configuration to cProfile (its index)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    for i, (label, overrides) in enumerate(CONFIGS.items()):
        enc, tok = build(overrides, 1)
        e = tok([SENTENCE], return_tensors="pt")
        args = (e["input_ids"], e["attention_mask"], e.get("token_type_ids"))
        with torch.no_grad():
            for _ in range(20):  # warm-up
                out = enc(*args)
            t, c = time.perf_counter(), time.thread_time()
            for _ in range(a.n):
                out = enc(*args)
            ms, cpu = ((time.perf_counter() - t) / a.n * 1e3, (time.thread_time() - c) / a.n * 1e3)
            # thread CPU time as well: on a shared machine it leaves out the time other processes took the core
            print(f"{label}: {ms:.3f} ms per forward ({cpu:.3f} ms CPU), exit layer {int(out.exit_layer[0])}")
            if i == a.profile:
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(a.n):
                    enc(*args)
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(a.top)


if __name__ == "__main__":
    main()
