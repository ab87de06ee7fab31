"""Table + figure of the long-sequence study from its CSV (written by bench_long_sequences.py).

    .venv/bin/python experiments/plot_long_sequences.py experiments/results/long_sequences.csv OUT_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from eat.tables import markdown_table


def main(csv_path: str, out_dir: str) -> int:
    if not Path(csv_path).is_file():
        print(f"error: {csv_path}: file not found (run experiments/bench_long_sequences.py first)", file=sys.stderr)
        return 2
    df = pd.read_csv(csv_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for kind, part in (("whole model (6 layers, bs=1)", df[~df.mechanism.str.startswith("attention:")]),
                       ("attention op alone (one layer)", df[df.mechanism.str.startswith("attention:")])):
        wide = part.pivot(index="length", columns="mechanism", values="ms_median")
        speed = part.pivot(index="length", columns="mechanism", values="speedup_vs_dense")
        rows = [[L, *(f"{row[c]:.2f} ({speed.loc[L, c]:.2f}x)" for c in wide.columns)] for L, row in wide.iterrows()]
        lines += [f"## {kind}: median ms (speed-up vs dense)", "", markdown_table(["L", *wide.columns], rows), ""]
    (out / "tables.md").write_text("\n".join(lines) + "\n")
    with matplotlib.rc_context({"font.family": "DejaVu Sans", "path.simplify": True}):
        draw(df, out)
    print((out / "tables.md").read_text())
    return 0


def draw(df: pd.DataFrame, out: Path) -> None:
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for name, part in df.groupby("mechanism"):
        ax.plot(part.length, part.ms_median, marker="o", label=name, linestyle="--" if ":" in name else "-")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel("median latency (ms), bs=1")
    device = df.device.iloc[0] if "device" in df else "cpu"
    ax.set_title(f"Long sequences ({device}): dense vs local attention and pruning")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    # No software version in the PNG metadata and a fixed font: the committed figure is byte-identical in any clone.
    fig.savefig(out / "long_sequences.png", dpi=110, metadata={"Software": None})


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
