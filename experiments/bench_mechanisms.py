"""The mechanism ablation of one trained checkpoint, timed by the declared harness (eat.bench): the static
model, HF's static model, each of the 8 combinations of prune, sparse and exit, the reference's mask mode, and
token merging in place of pruning at the same retention; interleaved batch by batch on the same batches, >= 5
passes, speed-ups as the median [min-max] of per-pass ratios.

    python experiments/bench_mechanisms.py --ckpt PATH/best.ckpt --glue ../shared/data/glue \
        --results experiments/results/X.csv --predictions experiments/results/predictions/X --summary X.md

The checkpoint must have exit heads (trained with an `exit` mechanism); the other configurations reuse its
backbone and final head. `--only a,b` keeps those labels (in this order of CONFIGS); every other option is
eat.bench's (--batch-sizes, --passes, --max-examples, --common OVERRIDES..., --device, more --config ...).
"""
from __future__ import annotations

import sys

from eat import bench

CONFIGS = [  # (label, overrides): the first is the baseline of the speed-ups
    ("none", ["mechanism=none"]),
    ("hf_static", ["mechanism=none", "peer=hf_static"]),
    ("prune", ["mechanism=prune"]),
    ("sparse", ["mechanism=sparse"]),
    ("exit", ["mechanism=exit"]),
    ("prune+sparse", ["mechanism=prune+sparse"]),
    ("prune+exit", ["mechanism=prune+exit"]),
    ("sparse+exit", ["mechanism=sparse+exit"]),
    ("prune+sparse+exit", ["mechanism=prune+sparse+exit"]),
    ("prune+sparse+exit (mask: reference)", ["mechanism=prune+sparse+exit", "mechanism.mode=mask"]),
    # token merging at pruning's retention (prune and merge keep 0.7; the prune+sparse+exit alias keeps 0.8)
    ("merge", ["mechanism=merge"]),
    ("merge+exit", ["mechanism=[merge,exit]"]),
    ("merge+sparse+exit", ["mechanism=[merge,sparse,exit]", "mechanism.merge.keep_ratios=[0.8,0.8]"]),
]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only = None
    if "--only" in argv:
        i = argv.index("--only")
        only, argv = argv[i + 1].split(","), argv[:i] + argv[i + 2:]
        unknown = sorted(set(only) - {label for label, _ in CONFIGS})
        if unknown:
            print(f"error: --only {','.join(unknown)}: not a configuration; allowed: "
                  f"{', '.join(label for label, _ in CONFIGS)}", file=sys.stderr)
            return 2
    configs = [x for label, overrides in CONFIGS if only is None or label in only
               for x in ("--config", label, *overrides)]
    return bench.main([*configs, *argv])


if __name__ == "__main__":
    sys.exit(main())
