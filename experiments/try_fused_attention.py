"""One MiniLM layer graph with its attention as ORT's fused `com.microsoft.MultiHeadAttention`, against the layer
graph EAT runs (issue 14: does EAT gain from the fusions ORT's transformer optimizer gives the static peer?).

`peer=ort_int8_opt` fuses each static layer's attention into QAttention, which quantizes its input once per call:
that fusion cannot serve EAT's per-token INT8 scheme (its un-normalisation per token must come between the
projections and the softmax). What can: MultiHeadAttention over the projected q, k, v in fp32, with EAT's additive
mask as its attention_bias, any INT8 scheme for the projections. This script times that layer graph against
`eat.runtimes.layer_file`'s (the same weights, the same ORT quantizer), for both activation schemes, interleaved,
and checks the two agree on real tokens.

    .venv/bin/python experiments/try_fused_attention.py --threads 2 --out experiments/results/fused_attention.md
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eat.config import RuntimeConfig
from eat.model.encoder import EncoderConfig, Layer
from eat.runtimes import TokenNormLinear, layer_file, ort_int8_file, ort_session, quiet_export, swap_linears
from eat.tables import table_head, table_row


class _MHA(torch.autograd.Function):
    """SDPA in torch; one MultiHeadAttention node in the export."""

    @staticmethod
    def forward(ctx, q, k, v, bias, H: int):  # (B, L, D) x3, (B, 1, L, L) -> (B, L, D)
        B, L, D = q.shape
        split = lambda t: t.view(B, L, H, D // H).transpose(1, 2)  # noqa: E731
        return F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=bias).transpose(1, 2).reshape(B, L, D)

    @staticmethod
    def symbolic(g, q, k, v, bias, H):
        # inputs 3 and 4 (projection bias, key padding mask) are left empty after export (_fill_optional_inputs)
        return g.op("com.microsoft::MultiHeadAttention", q, k, v, bias, num_heads_i=H)


class _FusedLayer(nn.Module):
    """Layer.forward with the attention as one op (no received attention: the layers that feed no pruning)."""

    def __init__(self, layer: Layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, bias):
        m, (B, L, _) = self.layer, x.shape
        ctx = _MHA.apply(m.q(x), m.k(x), m.v(x), bias.expand(B, 1, L, L), m.H)
        x = m.attn_norm(x + m.o(ctx))
        return m.ffn_norm(x + m.ffn_out(F.gelu(m.ffn_in(x))))


def _fill_optional_inputs(path: str) -> None:
    import onnx

    model = onnx.load(path)
    for n in model.graph.node:
        if n.op_type == "MultiHeadAttention":
            ins = list(n.input)
            del n.input[:]
            n.input.extend(ins[:3] + ["", ""] + ins[3:])
    onnx.save(model, path)


def fused_file(layer: Layer, folder: str, activation: str) -> str:
    D = layer.q.in_features
    if activation == "token":
        layer = swap_linears(copy.deepcopy(layer), lambda lin: TokenNormLinear(lin, True))
    path = os.path.join(folder, f"fused_{activation}.onnx")
    with quiet_export(), torch.no_grad():
        torch.onnx.export(_FusedLayer(layer).eval(), (torch.randn(2, 5, D), torch.zeros(2, 1, 1, 5)), path,
                          input_names=["hidden", "bias"], output_names=["out"], opset_version=17, dynamo=False,
                          dynamic_axes={"hidden": {0: "b", 1: "l"}, "bias": {0: "b", 2: "q", 3: "l"},
                                        "out": {0: "b", 1: "l"}})
    _fill_optional_inputs(path)
    return ort_int8_file(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--passes", type=int, default=200, help="timed calls per graph at bs=1 (bs=32: a fifth)")
    ap.add_argument("--out", default=None, help="markdown table (default: stdout only)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    c = EncoderConfig(vocab_size=300, hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536)  # MiniLM-L6
    layer = Layer(c).eval()
    folder = tempfile.mkdtemp()
    sessions = {}
    for act in ("tensor", "token"):
        path, _ = layer_file(layer, folder, f"eat_{act}", True, False, RuntimeConfig(name="ort_int8", activation=act))
        sessions[f"eat layer graph, {act}"] = ort_session(path)
        sessions[f"fused attention, {act}"] = ort_session(fused_file(layer, folder, act))
    rows, rng = [], np.random.default_rng(0)
    for B, L in ((1, 25), (32, 30)):
        x = rng.standard_normal((B, L, c.hidden_size)).astype(np.float32)
        real = np.ones((B, L), bool)
        real[B // 2:, L - 7:] = False  # half the rows padded, as in a batch of SST-2 sentences
        feed = {"hidden": x, "bias": np.where(real, 0, np.finfo(np.float32).min).astype(np.float32)[:, None, None, :]}
        out = {n: s.run(None, feed)[0] for n, s in sessions.items()}
        times = {n: [] for n in sessions}
        for _ in range(args.passes if B == 1 else max(args.passes // 5, 5)):
            for n, s in sessions.items():  # interleaved: the same load for every graph
                t0 = time.perf_counter()
                s.run(None, feed)
                times[n].append(time.perf_counter() - t0)
        for act in ("tensor", "token"):
            base = statistics.median(times[f"eat layer graph, {act}"])
            for n in (f"eat layer graph, {act}", f"fused attention, {act}"):
                diff = np.abs(out[n] - out[f"eat layer graph, {act}"])[real].max()
                med = statistics.median(times[n])
                rows.append([f"{B} x {L}", n, f"{med * 1e6:.0f}", f"{base / med:.2f}x", f"{diff:.1e}"])
    head = ["batch x length", "graph (ORT INT8)", "us per call (median)", "speed-up", "max abs diff vs EAT's"]
    text = "\n".join([f"{args.threads} threads; one MiniLM-L6-shaped layer, random weights; calls interleaved", "",
                      *table_head(head), *(table_row(r) for r in rows)])
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"# {' '.join(['experiments/try_fused_attention.py', *(argv or sys.argv[1:])])}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
