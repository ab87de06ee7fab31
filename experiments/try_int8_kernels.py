"""Batch-invariant INT8 for one Linear in ONNX Runtime: the forms tried against the one EAT uses (issue 14).

EAT's INT8 runtimes quantize each token by its own range so that a row's result never depends on its batch
(`runtime.activation=token`). In ORT that is TokenNormLinear: the token mapped onto [0, 1] in the graph, then ORT's
per-call DynamicQuantizeMatMul over a range that is [0, 1] in every batch. It costs ~1.5-2x the per-call form's
time. Three other routes to per-token (or finer) activation scales, each one ORT op or a short chain:

- token_norm: TokenNormLinear exported and quantized as the runtime does (the reference, batch-invariant);
- per_call: plain `quantize_dynamic` of the Linear (one scale per call; not batch-invariant; the speed to beat);
- per_row_qlinear: symmetric per-row scales by hand, QuantizeLinear(axis=0) -> MatMulInteger -> Cast -> Mul by
  the outer product of row and column scales, as ORT optimizes it by default (it fuses the chain into
  MatMulIntegerToFloat) and with that fusion disabled (`disabled_optimizers`);
- per_row_prescaled: the same scales, but each row divided by its scale first and quantized with scale 1, the row
  scales multiplied in after the column scales (so ORT's fusion of the chain sees per-column scales only);
- nbits8: `com.microsoft.MatMulNBits`, 8-bit weights in blocks of 32 along K, accuracy_level=4 (activations
  quantized to INT8 per block of each row inside the kernel).

For each: median time of one call at M=25 rows (one SST-2 sentence) and M=960 (32 x 30), calls interleaved pass by
pass; mean |error| against the fp32 MatMul; for per_row_qlinear also against an exact numpy evaluation of the same
integer arithmetic (0 = ORT computes what the graph says); and whether row 0 alone equals row 0 in the batch.

    .venv/bin/python experiments/try_int8_kernels.py --threads 2 --out experiments/results/int8_kernels.md
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict

import numpy as np
import torch
from torch import nn

from eat.runtimes import TokenNormLinear, ort_session, quiet_export, session_options
from eat.tables import table_head, table_row


def _export(module: nn.Module, K: int, folder: str, name: str) -> str:
    path = os.path.join(folder, f"{name}.onnx")
    with quiet_export(), torch.no_grad():
        torch.onnx.export(module, (torch.randn(2, 7, K),), path, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b", 1: "l"}}, opset_version=17, dynamo=False)
    return path


def per_row_model(W: np.ndarray, b: np.ndarray, prescaled: bool = False):
    """Symmetric INT8 per row of x (M, K) and per output channel of W (N, K): y = (q(x) @ q(W)^T) s_x s_w + b.
    prescaled: each row divided by its scale first, then one QuantizeLinear of scale 1 for the whole input, and the
    row scales applied after the column scales: the Mul right after MatMulInteger -> Cast holds the column scales
    only, the one form ORT's MatMulIntegerToFloat kernel computes correctly."""
    import onnx
    from onnx import TensorProto as TP, helper as h, numpy_helper as nh

    N, K = W.shape
    s_w = np.abs(W).max(1) / 127.0
    Wq = np.clip(np.round(W / s_w[:, None]), -127, 127).astype(np.int8).T.copy()
    nodes = [h.make_node("Abs", ["x"], ["ax"]), h.make_node("ReduceMax", ["ax"], ["am"], keepdims=1, axes=[1]),
             h.make_node("Max", ["am", "eps"], ["am1"]), h.make_node("Div", ["am1", "c127"], ["s"])]  # (M, 1)
    if prescaled:
        nodes += [h.make_node("Div", ["x", "s"], ["xs"]),
                  h.make_node("QuantizeLinear", ["xs", "one", "zp"], ["xq"]),  # uint8, zero point 128
                  h.make_node("MatMulInteger", ["xq", "Wq", "zp"], ["yi"]),
                  h.make_node("Cast", ["yi"], ["yf"], to=TP.FLOAT),
                  h.make_node("Mul", ["yf", "sw"], ["yw"]), h.make_node("Mul", ["yw", "s"], ["y0"])]
    else:
        nodes += [h.make_node("Squeeze", ["s", "ax1"], ["s1"]), h.make_node("Shape", ["s1"], ["ms"]),
                  h.make_node("Expand", ["zp", "ms"], ["zpm"]),
                  h.make_node("QuantizeLinear", ["x", "s1", "zpm"], ["xq"], axis=0),  # uint8, zero point 128
                  h.make_node("MatMulInteger", ["xq", "Wq", "zp"], ["yi"]),
                  h.make_node("Cast", ["yi"], ["yf"], to=TP.FLOAT),
                  h.make_node("Mul", ["s", "sw"], ["sc"]), h.make_node("Mul", ["yf", "sc"], ["y0"])]
    nodes.append(h.make_node("Add", ["y0", "b"], ["y"]))
    init = [nh.from_array(np.array(np.uint8(128)), "zp"), nh.from_array(np.array(np.float32(1e-8)), "eps"),
            nh.from_array(np.array(np.float32(127)), "c127"), nh.from_array(np.array([1], np.int64), "ax1"),
            nh.from_array(Wq, "Wq"), nh.from_array(s_w.astype(np.float32), "sw"), nh.from_array(b, "b")]
    init += [nh.from_array(np.array(np.float32(1)), "one")] if prescaled else []
    g = h.make_graph(nodes, "per_row", [h.make_tensor_value_info("x", TP.FLOAT, ["m", K])],
                     [h.make_tensor_value_info("y", TP.FLOAT, ["m", N])], init)
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    onnx.checker.check_model(model)

    def exact(x: np.ndarray) -> np.ndarray:  # the same integer arithmetic in float64
        s = np.maximum(np.abs(x).max(1, keepdims=True), 1e-8) / 127.0
        xq = np.clip(np.round(x / s), -128, 127)
        return (xq @ Wq.astype(np.float64)) * s * s_w + b
    return model, exact


def nbits_model(W: np.ndarray, b: np.ndarray, block: int = 32):
    """MatMulNBits with 8-bit weights (unsigned, zero point 128) in blocks of `block` along K; accuracy_level=4."""
    from onnx import TensorProto as TP, helper as h, numpy_helper as nh

    N, K = W.shape
    Wb = W.reshape(N, K // block, block)
    scale = np.abs(Wb).max(-1) / 127.0
    q = (np.clip(np.round(Wb / scale[..., None]), -128, 127) + 128).astype(np.uint8)
    nodes = [h.make_node("MatMulNBits", ["x", "B", "S"], ["y0"], domain="com.microsoft", K=K, N=N, bits=8,
                         block_size=block, accuracy_level=4), h.make_node("Add", ["y0", "b"], ["y"])]
    g = h.make_graph(nodes, "nbits", [h.make_tensor_value_info("x", TP.FLOAT, ["m", K])],
                     [h.make_tensor_value_info("y", TP.FLOAT, ["m", N])],
                     [nh.from_array(q, "B"), nh.from_array(scale.astype(np.float32).reshape(-1), "S"),
                      nh.from_array(b, "b")])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--out", default="")
    a = p.parse_args(argv)
    import onnxruntime as ort

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def ort_of(model, disabled=()):
        return ort.InferenceSession(model.SerializeToString(), session_options(a.threads),
                                    providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled))

    lines = [f"# Batch-invariant INT8 kernels in ONNX Runtime {ort.__version__}, one Linear", "",
             f"Command: `python experiments/try_int8_kernels.py --threads {a.threads} --passes {a.passes}"
             + (f" --out {a.out}`" if a.out else "`"), "",
             "Median of the per-call times over the passes (calls interleaved pass by pass), in microseconds. "
             "Error: mean |y - fp32| over the batch (an input row with one outlier feature of 30). "
             "`= exact`: max |ORT - the graph's integer arithmetic in numpy|. Invariant: row 0 alone equals row 0 "
             "in the batch, bit for bit.", ""]
    for K, N in ((384, 1536), (1536, 384)):
        lin = nn.Linear(K, N)
        nn.init.normal_(lin.weight, std=0.05)
        W, b = lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy()
        per_row, exact = per_row_model(W, b)
        prescaled, _ = per_row_model(W, b, prescaled=True)
        with tempfile.TemporaryDirectory(prefix="eat-int8-") as folder:
            sess: Dict[str, Callable] = {
                "per_call (quantize_dynamic)": ort_session(_export(lin, K, folder, "pc"), int8=True),
                "token_norm (EAT's runtime.activation=token)": ort_session(
                    _export(TokenNormLinear(lin), K, folder, "tn"), int8=True),
                "per_row_qlinear, ORT default fusions": ort_of(per_row),
                "per_row_qlinear, MatMulIntegerToFloatFusion off": ort_of(per_row, ["MatMulIntegerToFloatFusion"]),
                "per_row_prescaled, ORT default fusions": ort_of(prescaled),
                "per_row_prescaled, MatMulIntegerToFloatFusion off": ort_of(prescaled, ["MatMulIntegerToFloatFusion"]),
                "nbits8 (MatMulNBits, accuracy_level=4)": ort_of(nbits_model(W, b)),
            }
            lines += [f"### Linear {K} -> {N}", "",
                      *table_head(["form", "M=25 us", "M=960 us", "error M=960", "= exact", "invariant"])]
            res = {}
            for M in (25, 960):
                x = rng.standard_normal((M, K)).astype(np.float32)
                x[3, 5] = 30.0
                feeds = {name: ({"x": x[None]} if "quantize_dynamic" in name or "token_norm" in name else {"x": x})
                         for name in sess}
                reps = max(1, 3000 // M)
                times = {name: [] for name in sess}
                for name, s in sess.items():
                    s.run(None, feeds[name])
                for _ in range(a.passes):
                    for name, s in sess.items():
                        t = time.perf_counter()
                        for _ in range(reps):
                            s.run(None, feeds[name])
                        times[name].append((time.perf_counter() - t) / reps * 1e6)
                ref = x.astype(np.float64) @ W.T.astype(np.float64) + b
                for name, s in sess.items():
                    y = s.run(None, feeds[name])[0].reshape(M, N)
                    one = {"x": feeds[name]["x"][..., :1, :] if feeds[name]["x"].ndim == 3 else x[:1]}
                    y1 = s.run(None, one)[0].reshape(1, N)
                    r = res.setdefault(name, {})
                    r[M] = statistics.median(times[name])
                    if M == 960:
                        r["err"] = float(np.abs(y - ref).mean())
                        r["exact"] = (f"{np.abs(y - exact(x.astype(np.float64))).max():.1e}"
                                      if name.startswith("per_row") else "")
                        r["inv"] = "yes" if np.array_equal(y1[0], y[0]) else "no"
            for name, r in res.items():
                lines.append(table_row([name, f"{r[25]:.0f}", f"{r[960]:.0f}", f"{r['err']:.2e}", r["exact"], r["inv"]]))
            lines.append("")
    text = "\n".join(lines) + "\n"
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
