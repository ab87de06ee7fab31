"""runtime.graph=optimized: EAT's exit decisions grafted into the static peer's own optimized ONNX Runtime graph.

Why: at bs=1 EAT's other ORT runtimes build their layers themselves (eat.runtimes.layer_file: per-token INT8 scales,
attention unfused), and a layer there cost ~1.4x the layer of the graph a user deploys, the HF export after ORT's
transformer optimizer (fused QAttention, SkipLayerNormalization, BiasGelu) and quantize_dynamic (`peer=ort_int8_opt`;
RESULTS 2j, experiments/bench_sst2_bs1_cost.md). So here the graph IS that peer's graph (eat.peers.hf_onnx_file:
the same export, optimizer and quantizer, from the same weights), cut after every layer with an exit head: the
head (fp32, inlined from `Mechanism.readout`) reads the layer's output, and an `If` either returns the head's
logits (the row is sure) or runs the rest of the graph, which sits inside its else-branch. With no row sure the
graph computes exactly what the peer computes.

Batch invariance: the peer's INT8 takes one activation scale per call (DynamicQuantizeLinear). So every row runs
alone, without its padding: its scales are its own at any batch size, and bs=1 and bs=64 give the same logits,
exits and FLOPs bit for bit. That suits bs=1 (the batch is one row anyway); at larger batches runtime.graph=whole
(rows in one graph, compacted as they exit) is the faster one. What it runs: early exit by confidence (threshold
and temperatures are inputs, read at each call), heads pooling mean, cls or pair; nothing else acts between its
layers (refused at start-up with a ConfigError naming the way out: runtime.graph=whole or layer).
"""
from __future__ import annotations

import tempfile
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from eat import flops
from eat.checks import ConfigError
from eat.config import RuntimeConfig
from eat.model.encoder import Encoder
from eat.model.state import Outputs
from eat.whole_graph import _BOOL, _F, _I64, _Net, _Scope, check_graph_exits, flops_from_lengths, if_node


def check_optimized_graph(encoder: Encoder) -> None:
    """ConfigError naming what runtime.graph=optimized cannot run, before anything is exported."""
    extra = [n for n in encoder.mechanisms if n != "exit"]
    if extra:
        raise ConfigError(f"runtime.graph=optimized cannot run mechanism.{extra[0]} (the peer's fused layers take no "
                          f"mechanism inside or between them but exits); allowed mechanisms: ['exit']. Use "
                          f"runtime.graph=whole (exits and pruning) or runtime.graph=layer")
    check_graph_exits(encoder.mechanisms["exit"] if "exit" in encoder.mechanisms else None, "optimized")
    if encoder.c.arch != "bert":
        raise ConfigError(f"runtime.graph=optimized: the peer's graph is cut at BERT's layer outputs; model arch "
                          f"{encoder.c.arch!r} is not supported (allowed: ['bert']). Use runtime.graph=whole")


def per_token_ffn(graph, num_layers: int) -> None:
    """runtime.activation=row: the two FFN MatMuls of every layer (HF's intermediate.dense and output.dense) with one
    symmetric INT8 scale per token instead of quantize_dynamic's one per call, in place. Each chain
    DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(x scale * w scales) becomes eat.runtimes.RowInt8Linear's
    export: x / s (s = max|x| / 127 per token) -> QuantizeLinear (scale 1, zero point 128) -> MatMulInteger (the
    peer's own INT8 weights) -> Cast -> Mul by the weight scales -> Mul by s (column scales first: ORT fuses that
    Mul into MatMulIntegerToFloat, whose kernel is wrong with per-row scales in it). Why: one scale per sentence is
    coarse where a few tokens are outliers; per token the FFN holds >= 99% agreement with fp32 on SST-2 dev (98.6%
    per call), for ~11% more time at bs=1 (experiments/runtimes_tried.md). QAttention takes one scale per call: the
    q/k/v projection stays as the peer runs it."""
    import re

    from onnx import helper, numpy_helper

    prod = {o: n for n in graph.node for o in n.output}
    readers: Dict[str, list] = {}
    for n in graph.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    replace, drop = {}, set()
    for n in graph.node:
        if n.op_type != "MatMulInteger" or not re.search(r"/layer\.\d+/(intermediate|output)/dense/MatMul", n.name):
            continue
        dql, cast = prod[n.input[0]], readers[n.output[0]][0]
        mul = readers[cast.output[0]][0]
        scales = prod[mul.input[1]]  # Mul(x scale, w scales)
        if (dql.op_type, cast.op_type, mul.op_type, scales.op_type) != ("DynamicQuantizeLinear", "Cast", "Mul", "Mul"):
            raise ConfigError(f"runtime.graph=optimized activation=row: unexpected INT8 chain around {n.name}; use "
                              f"runtime.activation=tensor")
        p = f"eat/token{len(replace)}/"
        for value, dtype, name in ((1e-8, np.float32, "eps"), (127.0, np.float32, "qmax"), (1.0, np.float32, "one"),
                                   (128, np.uint8, "zp")):
            graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype), p + name))
        x, w_scale = dql.input[0], scales.input[1]
        mk = lambda op, ins, out, **kw: helper.make_node(op, ins, [out], name=out, **kw)  # noqa: E731
        replace[id(dql)] = [
            mk("Abs", [x], p + "abs"), mk("ReduceMax", [p + "abs"], p + "amax", axes=[-1], keepdims=1),
            mk("Max", [p + "amax", p + "eps"], p + "amax1"), mk("Div", [p + "amax1", p + "qmax"], p + "s"),
            mk("Div", [x, p + "s"], p + "xs"), mk("QuantizeLinear", [p + "xs", p + "one", p + "zp"], p + "xq"),
            mk("MatMulInteger", [p + "xq", n.input[1], p + "zp", n.input[3]], p + "acc"),
            mk("Cast", [p + "acc"], p + "accf", to=_F), mk("Mul", [p + "accf", w_scale], p + "y"),
            mk("Mul", [p + "y", p + "s"], mul.output[0])]
        drop |= {id(n), id(cast), id(mul), id(scales)}
    if len(replace) != 2 * num_layers:
        raise ConfigError(f"runtime.graph=optimized activation=row: found {len(replace)} FFN MatMuls for {num_layers} "
                          f"layers (expected {2 * num_layers}); use runtime.activation=tensor")
    nodes = []
    for n in graph.node:
        nodes += replace.get(id(n), [] if id(n) in drop else [n])
    del graph.node[:]
    graph.node.extend(nodes)


def layer_outputs(graph, num_layers: int) -> List[str]:
    """The name of each layer's output in an optimized BERT graph: every layer ends in two SkipLayerNormalization
    nodes (after attention, after the FFN), and the second one's output is the layer's."""
    skip = [n.output[0] for n in graph.node if n.op_type == "SkipLayerNormalization"]
    if len(skip) != 2 * num_layers:
        raise ConfigError(f"runtime.graph=optimized: ORT's transformer optimizer left {len(skip)} SkipLayerNormalization "
                          f"nodes for {num_layers} layers (expected {2 * num_layers}), so the layers cannot be told "
                          f"apart. Use runtime.graph=whole")
    return skip[1::2]


class _Readout(nn.Module):
    """An exit head's readout (eat.mechanisms.early_exit.ExitReadout) with the graph's inputs."""

    def __init__(self, readout: nn.Module):
        super().__init__()
        self.readout = readout
        self.protected = bool(getattr(readout, "needs_protected", False))

    def forward(self, hidden: Tensor, query_mask: Tensor, protected: Optional[Tensor] = None) -> Tensor:
        return self.readout(hidden, query_mask, protected) if self.protected else self.readout(hidden, query_mask)


def _readout_model(readout: nn.Module, D: int, folder: str, name: str, opset: int):
    import onnx

    from eat.runtimes import quiet_export

    r = _Readout(readout).eval()
    args = (torch.randn(1, 5, D), torch.ones(1, 5))
    names = ["hidden", "query_mask"]
    if r.protected:  # [CLS] and two [SEP]s: a pair, so the export traces both segments
        args += (torch.tensor([[True, False, True, False, True]]),)
        names.append("protected")
    path = f"{folder}/{name}.onnx"
    with quiet_export(), torch.no_grad():
        torch.onnx.export(r, args, path, input_names=names, output_names=["z"],
                          dynamic_axes={n: {0: "b", 1: "l"} for n in names}, opset_version=opset, dynamo=False)
    return onnx.load(path)


class OptimizedGraphEncoder(nn.Module):
    """Drop-in for the evaluated Encoder (same call, same Outputs): one ORT session, run once per row."""

    def __init__(self, encoder: Encoder, cfg: RuntimeConfig):
        super().__init__()
        check_optimized_graph(encoder)
        import onnx

        from eat.peers import hf_onnx_file
        from eat.runtimes import int8_weights, ort_session

        self.c, self.mechanisms = encoder.c, encoder.mechanisms  # eval-time settings are read from here
        self.protected_tokens = encoder.protected_tokens
        self.exit = encoder.mechanisms["exit"] if "exit" in encoder.mechanisms else None
        self.pair = self.exit is not None and self.exit.cfg.pooling == "pair"
        int8 = cfg.name == "ort_int8"
        with tempfile.TemporaryDirectory(prefix="eat-opt-") as folder:  # never the repository
            # the embedding tables stay fp32 (the quantizer would make them INT8): a gather costs the same either way,
            # and INT8 tables cost agreement with fp32 (98.2 vs 98.6% per call on SST-2 dev)
            peer = onnx.load(hf_onnx_file(encoder, folder, cfg.opset, optimize=True, int8=int8,
                                          per_channel=cfg.per_channel, weights=int8_weights(cfg),
                                          fp32_ops=("EmbedLayerNormalization",)))
            if int8 and cfg.activation == "row":
                per_token_ffn(peer.graph, encoder.c.num_layers)
            heads = {} if self.exit is None else {
                i: _readout_model(self.exit.readout(i, protected=self.pair), encoder.c.hidden_size, folder,
                                  f"head{i}", cfg.opset) for i in self.exit.active}
        model = self._graft(peer, heads)
        self.session = ort_session(model.SerializeToString())
        self._inputs = {i.name for i in self.session.get_inputs()}

    # ------------------------------------------------------------------ the graph
    def _graft(self, peer, heads: Dict[int, object]):
        """The peer's graph with an exit decision after each layer in `heads` (layer index -> its readout graph):
        the nodes after a decision go into its If's else-branch, each initializer into the scope of its first
        reader (a branch that read them from an outer scope would take them as implicit inputs at every run)."""
        from onnx import helper

        g, nl = peer.graph, self.c.num_layers
        ends = layer_outputs(g, nl)
        final = "eat/final_logits"  # the peer's output, renamed: the model's outputs are the grafted ones
        nodes = []
        seg, s = [], 0  # the layer each node belongs to (embeddings: 0; the final head: the last layer)
        for n in g.node:
            n2 = type(n)()
            n2.CopyFrom(n)
            n2.output[:] = [final if o == "logits" else o for o in n.output]
            nodes.append(n2)
            seg.append(s)
            if s < nl - 1 and ends[s] in n.output:
                s += 1
        inits = {t.name: t for t in g.initializer}
        first = {}
        for n, s in zip(nodes, seg):
            for x in n.input:
                if x in inits:
                    first.setdefault(x, s)
        net = _Net()

        def part(scope: _Scope, s: int) -> None:  # layer s's nodes and the initializers first read there
            scope.nodes += [n for n, t in zip(nodes, seg) if t == s]
            scope.inits += [inits[k] for k, t in first.items() if t == s]

        def step(scope: _Scope, s: int):
            """Layer s and everything after it in `scope`; returns (logits (1, C), exit layer (1,))."""
            part(scope, s)
            if s == nl - 1:
                return final, scope.const([nl], "int64")
            if s not in heads:
                return step(scope, s + 1)
            k = self.exit.layers.index(s)
            feeds = {"hidden": ends[s], "query_mask": "eat/query_mask", "protected": "protected"}
            wanted = {x.name for x in heads[s].graph.input}
            z = scope.inline(heads[s], {a: b for a, b in feeds.items() if a in wanted}, f"eat/head{s}/")["z"]
            z = scope.op("Div", [z, scope.op("Gather", ["temperature", scope.const(k, "int64")], axis=0)])
            conf = scope.op("ReduceMax", [scope.op("Softmax", [z], axis=-1)], axes=[-1], keepdims=0)  # (1,)
            sure = scope.op("GreaterOrEqual", [conf, "threshold"])  # one row: a one-element condition
            done, rest = _Scope(net), _Scope(net)
            out = step(rest, s + 1)
            return if_node(net, scope, sure, done, [z, done.const([s + 1], "int64")], rest, list(out), [_F, _I64])

        top = _Scope(net)
        top.nodes.append(helper.make_node("Cast", ["attention_mask"], ["eat/query_mask"], to=_F, name="eat/mask"))
        logits, exit_layer = step(top, 0)
        for src, dst in ((logits, "logits"), (exit_layer, "exit_layer")):
            top.nodes.append(helper.make_node("Identity", [src], [dst], name=net.fresh("out")))
        inputs = list(g.input)
        if heads:
            inputs += [helper.make_tensor_value_info("threshold", _F, []),
                       helper.make_tensor_value_info("temperature", _F, ["h"])]
            if self.pair:
                inputs.append(helper.make_tensor_value_info("protected", _BOOL, ["b", "l"]))
        outputs = [helper.make_tensor_value_info("logits", _F, None), helper.make_tensor_value_info("exit_layer", _I64, None)]
        graph = helper.make_graph(top.nodes, "eat_optimized", inputs, outputs, initializer=top.inits)
        model = helper.make_model(graph, opset_imports=list(peer.opset_import))
        model.ir_version = peer.ir_version
        return model

    # ------------------------------------------------------------------ the call
    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Optional[Tensor] = None) -> Outputs:
        c, ex = self.c, self.exit
        B, L = input_ids.shape
        ids = input_ids.numpy().astype(np.int64, copy=False)
        mask = attention_mask.numpy() != 0  # (B, L)
        tt = token_type_ids.numpy().astype(np.int64, copy=False) if token_type_ids is not None else np.zeros_like(ids)
        protected = self.protected_tokens(input_ids, torch.from_numpy(mask)).numpy() if self.pair else None
        base = {}
        if ex is not None:  # read at each call: eval-time changes of the threshold or temperatures apply
            base = {"threshold": np.asarray(ex.threshold, dtype=np.float32),
                    "temperature": ex.temperature.detach().float().numpy()}
        logits = np.empty((B, c.num_labels), dtype=np.float32)
        exit_layer = np.empty(B, dtype=np.int64)
        n = mask.sum(1)
        for r in range(B):  # each row alone, its padding dropped: its INT8 scales are its own (batch invariance)
            real = mask[r]
            feed = {"input_ids": ids[r, real][None], "attention_mask": np.ones((1, int(n[r])), dtype=np.int64),
                    "token_type_ids": tt[r, real][None], **base}
            if protected is not None:
                feed["protected"] = protected[r, real][None]
            out = self.session.run(None, {k: v for k, v in feed.items() if k in self._inputs})
            logits[r] = out[0][0]
            exit_layer[r] = out[1][0] if len(out) > 1 else c.num_layers
        lengths = np.where(np.arange(c.num_layers)[None] < exit_layer[:, None], n[:, None], 0)  # (B, layers)
        static = flops.static_flops_per_row(L, c.num_layers, c.hidden_size, c.intermediate_size, c.num_labels)
        return Outputs(logits=torch.from_numpy(logits), exit_layer=torch.from_numpy(exit_layer),
                       tokens_in=torch.from_numpy(n), tokens_kept=torch.from_numpy(lengths),
                       flops=torch.from_numpy(flops_from_lengths(c, ex, lengths, exit_layer)),
                       static_flops=torch.full((B,), static, dtype=torch.float64))
