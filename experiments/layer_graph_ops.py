"""How many ops ONNX Runtime runs per INT8 layer graph, after its own optimizations (runtime=ort_int8; issue 14).

At bs=1 a MiniLM layer's matmuls take ~0.3 ms and every further op a few microseconds, so the op count of the
per-token INT8 scheme (runtime.activation=token) is its cost there. One MiniLM-L6-shaped layer (random weights:
the count does not depend on them) is exported by eat.runtimes.layer_file, quantized, and loaded with the session
options of every EAT session; the optimized graph ORT writes is counted by op type.

Usage: .venv/bin/python experiments/layer_graph_ops.py
"""
from __future__ import annotations

import collections
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from eat.config import RuntimeConfig  # noqa: E402
from eat.model.encoder import EncoderConfig, Layer  # noqa: E402
from eat.runtimes import layer_file, quiet_export, session_options  # noqa: E402


def main() -> None:
    c = EncoderConfig(vocab_size=300, hidden_size=384, num_layers=1, num_heads=12, intermediate_size=1536)
    layer = Layer(c).eval()
    print("| activation scheme | ops per layer graph | by type |\n|---|---|---|")
    for act in ("token", "tensor"):
        with tempfile.TemporaryDirectory() as d, quiet_export():
            path, _ = layer_file(layer, d, "layer", True, False, RuntimeConfig(name="ort_int8", activation=act))
            so = session_options(1)
            so.optimized_model_filepath = os.path.join(d, "optimized.onnx")
            so.log_severity_level = 3  # ORT's warning that the optimized file is hardware-specific
            ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
        print(f"| {act} | {sum(ops.values())} | {', '.join(f'{k} {v}' for k, v in ops.most_common())} |")


if __name__ == "__main__":
    main()
