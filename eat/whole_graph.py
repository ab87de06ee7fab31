"""runtime.graph=whole: EAT's whole forward (embeddings, every layer, exit decisions, row compaction, token
pruning, final head) as ONE ONNX Runtime graph, so no Python runs between layers.

Why: at bs=1 the per-layer sessions (runtime.graph=layer) pay ~0.2-0.3 ms of Python and a session call per layer
around ~0.3 ms of ORT work, so EAT at ~3 layers took as long as the static 6-layer graph
(experiments/runtimes_tried.md, "Where a bs=1 forward goes"). Here the loop is unrolled into nested ONNX `If`
nodes: after each exit layer the rows that are sure write their logits into the batch's output and leave
(`Compress`), the rest are re-padded to their own longest row, and the graph only runs the next layer if a row
is left. Exits stay per example at any batch size, and the layer graphs are the very files the per-layer runtime
runs (eat.runtimes.layer_file: the same per-token INT8 scheme, the heads inside in fp32), so both runtimes agree.

What it runs: early exit with criterion=confidence (threshold and temperatures are inputs, read from the
mechanism at each call, so eval-time changes apply; heads pooling mean, cls or pair: pair-pooled heads read the
segments from the protected tokens, which the graph carries through compaction and pruning) and token pruning of
single sentences (criterion attention or norm). What needs Python between layers is refused at start-up
(ConfigError): the local window, merging, other exit criteria, mode=mask; a batch of sentence pairs under
segment-wise pruning is refused when it arrives. Use runtime.graph=layer for those.
"""
from __future__ import annotations

import math
import tempfile
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from eat import flops
from eat.checks import ConfigError
from eat.config import RuntimeConfig
from eat.model.encoder import Encoder
from eat.model.state import Outputs

_F, _I64, _BOOL = 1, 7, 9  # onnx.TensorProto FLOAT, INT64, BOOL


def check_graph_exits(ex, graph: str) -> None:
    """ConfigError unless the exit mechanism `ex` (or None) is what an ORT graph's If nodes decide: per example
    (mode=compute) by confidence. Shared by runtime.graph=whole and runtime.graph=optimized."""
    if ex is None:
        return
    if ex.batch_level:
        raise ConfigError(f"runtime.graph={graph} runs mechanism.mode=compute only (got mode=mask)")
    if ex.cfg.criterion != "confidence":
        raise ConfigError(f"runtime.graph={graph}: mechanism.exit.criterion={ex.cfg.criterion!r} is not in the "
                          f"graph; allowed: ['confidence']. Use runtime.graph=layer")


def check_whole_graph(encoder: Encoder) -> None:
    """ConfigError naming what runtime.graph=whole cannot run, before anything is exported."""
    allowed = {"exit", "prune"}
    extra = [n for n in encoder.mechanisms if n not in allowed]
    if extra:
        raise ConfigError(f"runtime.graph=whole cannot run mechanism.{extra[0]} (it acts between layers in Python); "
                          f"allowed mechanisms: {sorted(allowed)}. Use runtime.graph=layer")
    mech = dict(encoder.mechanisms.items())
    ex, pr = mech.get("exit"), mech.get("prune")
    check_graph_exits(ex, "whole")
    if pr is not None and pr.reference:
        raise ConfigError("runtime.graph=whole runs mechanism.mode=compute only (got mode=mask)")


class _Scope:
    """The nodes of one ONNX (sub)graph; names are unique across the whole model (`net`)."""

    def __init__(self, net: "_Net"):
        # Weights and constants live in the scope that reads them: an If branch that read them from the outer
        # scope would take every later layer's weights as implicit inputs, at a cost per branch run.
        self.net, self.nodes, self.inits = net, [], []

    def const(self, value, dtype) -> str:
        from onnx import numpy_helper
        import numpy as np

        name = self.net.fresh("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs, n_out: int = 1, **attrs):
        from onnx import helper

        outs = [self.net.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.net.fresh("n"), **attrs))
        return outs[0] if n_out == 1 else outs

    def inline(self, model, feeds: Dict[str, str], prefix: str) -> Dict[str, str]:
        """Copy `model`'s nodes into this scope with its inputs wired to `feeds` (input name -> value here); its
        initializers become this scope's. Returns its outputs."""
        from onnx import helper

        g = model.graph
        rename = dict(feeds)
        for t in g.initializer:
            rename[t.name] = prefix + t.name
            t2 = type(t)()
            t2.CopyFrom(t)
            t2.name = prefix + t.name
            self.inits.append(t2)
        for imp in model.opset_import:
            self.net.opsets[imp.domain] = max(self.net.opsets.get(imp.domain, 0), imp.version)
        for n in g.node:
            ins = [rename.get(i, prefix + i) if i else "" for i in n.input]
            outs = [prefix + o for o in n.output]
            rename.update({o: prefix + o for o in n.output})
            node = helper.make_node(n.op_type, ins, outs, name=prefix + (n.name or self.net.fresh("n")),
                                    domain=n.domain)
            node.attribute.extend(n.attribute)
            self.nodes.append(node)
        return {o.name: rename[o.name] for o in g.output}


class _Net:
    """Names unique across the whole model, and the opsets its pieces need."""

    def __init__(self):
        self.opsets, self.n = {}, 0

    def fresh(self, hint: str) -> str:
        self.n += 1
        return f"{hint}_{self.n}"


def if_node(net: _Net, sc: _Scope, cond: str, then: _Scope, then_vals, other: _Scope, else_vals, types) -> Tuple[str, ...]:
    """An If node in `sc`: the branches are the scopes `then` and `other`, returning then_vals / else_vals (of the
    ONNX element types `types`)."""
    from onnx import helper

    def branch(scope: _Scope, vals, tag: str):
        outs = []
        for v, t in zip(vals, types):
            o = net.fresh(f"{tag}_out")
            scope.nodes.append(helper.make_node("Identity", [v], [o], name=net.fresh("n")))
            outs.append(helper.make_tensor_value_info(o, t, None))
        return helper.make_graph(scope.nodes, net.fresh(tag), [], outs, initializer=scope.inits)

    return tuple(sc.op("If", [cond], n_out=len(types), then_branch=branch(then, then_vals, "then"),
                       else_branch=branch(other, else_vals, "else")))


def flops_from_lengths(c, ex, lengths: np.ndarray, exit_layer: np.ndarray) -> np.ndarray:
    """The FLOPs eager's loop counts, from the padded length each row ran each layer at ((B, layers), 0: not run)
    and its exit layer; `ex` the exit mechanism or None. A layer over n tokens costs lin * n + att * n^2 (eat.flops:
    the Linears are linear in n, dense attention is quadratic), so two coefficients replace a dozen array passes;
    integers below 2^53, so exactly eager's sums."""
    lin = flops.layer_linear_flops(1, c.hidden_size, c.intermediate_size)
    att = flops.dense_attention_flops(1, c.hidden_size)
    n = lengths.astype(np.float64)
    total = (n * (lin + att * n)).sum(1)
    if ex is not None:  # each head consulted: a row in flight after an active head's layer
        total += (lengths[:, ex.active] > 0).sum(1) * (2.0 * c.num_labels * ex.head_inputs)
    return total + (exit_layer == c.num_layers) * flops.final_head_flops(c.hidden_size, c.num_labels)


class WholeGraphEncoder(nn.Module):
    """Drop-in for the evaluated Encoder (same call, same Outputs) that runs one ORT session per forward."""

    def __init__(self, encoder: Encoder, cfg: RuntimeConfig):
        super().__init__()
        check_whole_graph(encoder)
        self.c, self.mechanisms = encoder.c, encoder.mechanisms  # eval-time settings are read from here
        self.protected_tokens = encoder.protected_tokens
        mech = dict(encoder.mechanisms.items())
        self.exit, self.prune = mech.get("exit"), mech.get("prune")
        # the protected tokens ride along with the rows when pruning keeps them or pair-pooled exits read the
        # segments from them (eat.model.tokens.second_segment)
        self.carry_protected = self.prune is not None or (self.exit is not None and self.exit.cfg.pooling == "pair")
        import onnx

        from eat.runtimes import embeddings_file, layer_file, ort_session, quiet_export

        net = _Net()
        self._net = net
        int8 = cfg.name == "ort_int8"
        with tempfile.TemporaryDirectory(prefix="eat-whole-") as folder, quiet_export():
            self._layers = []
            for i, layer in enumerate(encoder.layers):
                received = any(m.wants_received_attention(i) for m in encoder.mechanisms.values())
                readouts = {n: r for n, m in encoder.mechanisms.items()
                            if (r := m.readout(i, protected=self.carry_protected)) is not None}
                path, _ = layer_file(layer, folder, f"layer{i}", int8, received, cfg, readouts)
                self._layers.append(onnx.load(path))
            self._embed = onnx.load(embeddings_file(encoder.embed, folder, cfg.opset))
            self._head = onnx.load(_head_file(encoder.head, encoder.c.hidden_size, folder, cfg.opset))
        model = self._build(cfg.opset)
        self.session = ort_session(model.SerializeToString())
        self._inputs = {i.name for i in self.session.get_inputs()}
        self._layers = self._embed = self._head = self._net = None  # the session holds the graph

    # ------------------------------------------------------------------ the graph
    def _build(self, opset: int):
        from onnx import helper

        c, net = self.c, self._net
        sc = _Scope(net)
        types = self.c.type_vocab_size > 0
        inputs = [helper.make_tensor_value_info("input_ids", _I64, ["b", "l"]),
                  helper.make_tensor_value_info("attention_mask", _F, ["b", "l"])]
        if self.carry_protected:
            inputs.append(helper.make_tensor_value_info("protected", _BOOL, ["b", "l"]))
        if self.exit is not None:
            inputs += [helper.make_tensor_value_info("threshold", _F, []),
                       helper.make_tensor_value_info("temperature", _F, ["h"])]
        feeds = {"input_ids": "input_ids"}
        if types:
            inputs.append(helper.make_tensor_value_info("token_type_ids", _I64, ["b", "l"]))
            feeds["token_type_ids"] = "token_type_ids"
        hidden = sc.inline(self._embed, feeds, "emb/")["hidden"]
        B = sc.op("Gather", [sc.op("Shape", ["input_ids"]), sc.const(0, "int64")], axis=0)  # scalar
        B1 = sc.op("Unsqueeze", [B, sc.const([0], "int64")])
        nl = c.num_layers
        BC = sc.op("Concat", [B1, sc.const([c.num_labels], "int64")], axis=0)
        BN = sc.op("Concat", [B1, sc.const([nl], "int64")], axis=0)
        acc = (sc.op("Expand", [sc.const([[0.0]], "float32"), BC]),  # logits (B, C)
               sc.op("Expand", [sc.const([nl], "int64"), B1]),  # exit layer (B,): nl unless a row leaves
               sc.op("Expand", [sc.const([[0]], "int64"), BN]),  # kept tokens (B, nl)
               sc.op("Expand", [sc.const([[0]], "int64"), BN]))  # padded length run (B, nl)
        rows = sc.op("Range", [sc.const(0, "int64"), B, sc.const(1, "int64")])
        P = "protected" if self.carry_protected else None  # (b, l) bool, carried for pruning and pair pooling
        outs = self._step(sc, 0, hidden, "attention_mask", P, rows, acc)
        names = ["logits", "exit_layer", "tokens_kept", "lengths"]
        for o, n in zip(outs, names):
            sc.nodes.append(helper.make_node("Identity", [o], [n], name=net.fresh("out")))
        outputs = [helper.make_tensor_value_info(n, t, None) for n, t in zip(names, (_F, _I64, _I64, _I64))]
        graph = helper.make_graph(sc.nodes, "eat_whole", inputs, outputs, initializer=sc.inits)
        opsets = [helper.make_opsetid(d, v) for d, v in net.opsets.items() if d not in ("", "ai.onnx")]
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *opsets])

    def _step(self, sc: _Scope, i: int, H: str, M: str, P: str, R: str, acc: Tuple[str, ...]) -> Tuple[str, ...]:
        """Layer i and everything after it, for the rows R in flight (hidden H (b, l, D), mask M (b, l) float,
        protected P (b, l) bool); acc = (logits (B, C), exit layer (B,), kept tokens (B, nl), length run (B, nl))
        of the whole batch. Returns acc after the forward."""
        net, c = self._net, self.c
        LOG, EX, KEPT, LEN = acc
        bias = sc.op("Unsqueeze", [sc.op("Mul", [sc.op("Sub", [sc.const(1.0, "float32"), M]),
                                                  sc.const(torch.finfo(torch.float32).min, "float32")]),
                                    sc.const([1, 2], "int64")])  # (b, 1, 1, l), 0 where real (additive_mask)
        model = self._layers[i]
        feeds = {"hidden": H, "bias": bias, "query_mask": M, "protected": P}
        out = sc.inline(model, {k: v for k, v in feeds.items() if k in {x.name for x in model.graph.input}}, f"l{i}/")
        Hn = out["out"]
        shape = sc.op("Shape", [Hn])
        l = sc.op("Gather", [shape, sc.const(1, "int64")], axis=0)  # scalar
        # what eager's loop records for layer i: real tokens in flight, and the padded length that ran
        R1 = sc.op("Unsqueeze", [R, sc.const([1], "int64")])
        idx = sc.op("Concat", [R1, sc.op("Expand", [sc.const([[i]], "int64"), sc.op("Shape", [R1])])],
                    axis=1)  # (b, 2): (row, i)
        cnt = sc.op("Cast", [sc.op("ReduceSum", [M, sc.const([1], "int64")], keepdims=0)], to=_I64)
        KEPT = sc.op("ScatterND", [KEPT, idx, cnt])
        LEN = sc.op("ScatterND", [LEN, idx, sc.op("Expand", [l, sc.op("Shape", [R])])])
        rec = out.get("received")
        if i == c.num_layers - 1:  # the final head on [CLS]
            first = sc.op("Gather", [Hn, sc.const(0, "int64")], axis=1)  # (b, D)
            logits = sc.inline(self._head, {"first": first}, "head/")["logits"]
            LOG = sc.op("ScatterND", [LOG, sc.op("Unsqueeze", [R, sc.const([1], "int64")]), logits])
            return LOG, EX, KEPT, LEN
        ex = self.exit
        if ex is not None and i in ex.active:
            k = ex.layers.index(i)
            z = sc.op("Div", [out["readout_exit"], sc.op("Gather", ["temperature", sc.const(k, "int64")], axis=0)])
            conf = sc.op("ReduceMax", [sc.op("Softmax", [z], axis=-1)], axes=[-1], keepdims=0)  # (b,)
            sure = sc.op("GreaterOrEqual", [conf, "threshold"])
            n_sure = sc.op("ReduceSum", [sc.op("Cast", [sure], to=_I64)], keepdims=0)
            b = sc.op("Gather", [sc.op("Shape", [R]), sc.const(0, "int64")], axis=0)
            # Three cases, so that the common ones run few ops (at bs=1 only the first two happen):
            # every row is sure -> write their logits, done; none is -> go on as is; some are -> compact, go on.
            done = _Scope(net)
            # (R1, the rows as (b, 1) indices, comes from this layer's bookkeeping in the outer scope)
            done_out = (done.op("ScatterND", [LOG, R1, z]),
                        done.op("ScatterND", [EX, R1, done.op("Expand", [done.const(i + 1, "int64"),
                                                                         done.op("Shape", [R])])]),
                        KEPT, LEN)
            go = _Scope(net)
            part = _Scope(net)  # some rows leave: their logits, then the rest re-padded to its own longest row
            stay = part.op("Not", [sure])
            gone = part.op("Unsqueeze", [part.op("Compress", [R, sure], axis=0), part.const([1], "int64")])  # (n, 1)
            LOGp = part.op("ScatterND", [LOG, gone, part.op("Compress", [z, sure], axis=0)])
            n1 = part.op("Unsqueeze", [n_sure, part.const([0], "int64")])
            EXp = part.op("ScatterND", [EX, gone, part.op("Expand", [part.const(i + 1, "int64"), n1])])
            Hc, Mc, Rc = (part.op("Compress", [t, stay], axis=0) for t in (Hn, M, R))
            pos = part.op("Range", [part.const(1.0, "float32"),
                                    part.op("Add", [part.op("Cast", [l], to=_F), part.const(1.0, "float32")]),
                                    part.const(1.0, "float32")])  # 1..l
            length = part.op("Cast", [part.op("Reshape", [part.op("ReduceMax", [part.op("Mul", [Mc, pos])], keepdims=0),
                                                          part.const([1], "int64")])], to=_I64)  # (1,)
            zero, one = part.const([0], "int64"), part.const([1], "int64")
            cut = lambda t: part.op("Slice", [t, zero, length, one])  # noqa: E731
            part_out = [LOGp, EXp, cut(Hc), cut(Mc), Rc]
            same = [LOG, EX, Hn, M, R]
            types = [_F, _I64, _F, _F, _I64]
            for t, typ in ((P, _BOOL), (rec, _F)):  # the protected tokens and received attention, where carried
                if t is not None:
                    part_out.append(cut(part.op("Compress", [t, stay], axis=0)))
                    same.append(t)
                    types.append(typ)
            some = go.op("Greater", [n_sure, go.const(0, "int64")])
            vals = list(if_node(net, go, some, part, part_out, _Scope(net), same, types))
            LOGg, EXg, Hg, Mg, Rg = vals[:5]
            Pg = vals.pop(5) if P is not None else None
            Hg, Mg, Pg = self._prune(go, i, Hg, Mg, Pg, vals[5] if rec is not None else None)
            go_out = self._step(go, i + 1, Hg, Mg, Pg, Rg, (LOGg, EXg, KEPT, LEN))
            every = sc.op("Equal", [n_sure, b])
            return if_node(net, sc, every, done, done_out, go, go_out, [_F, _I64, _I64, _I64])
        Hn, M, P = self._prune(sc, i, Hn, M, P, rec)
        return self._step(sc, i + 1, Hn, M, P, R, (LOG, EX, KEPT, LEN))

    def _prune(self, sc: _Scope, i: int, H: str, M: str, P: str, rec: Optional[str]):
        """eat.model.tokens.kept_tokens for single sentences: the best ceil(ratio x n) real tokens of each row
        ([CLS] always), gathered in their original order; shorter rows padded to the longest kept row."""
        pr = self.prune
        if pr is None or i not in pr.keep:
            return H, M, P
        net = self._net
        inf = sc.const(math.inf, "float32")
        if pr.cfg.criterion == "attention":
            scores = rec
        else:  # norm
            scores = sc.op("ReduceL2", [H], axes=[-1], keepdims=0)
        Mb = sc.op("Cast", [M], to=_BOOL)
        scores = sc.op("Where", [Mb, scores, sc.op("Neg", [inf])])
        scores = sc.op("Where", [P, inf, scores])
        l = sc.op("Gather", [sc.op("Shape", [H]), sc.const(1, "int64")], axis=0)
        n = sc.op("Cast", [sc.op("ReduceSum", [M, sc.const([1], "int64")], keepdims=0)], to=11)  # double
        keep = sc.op("Cast", [sc.op("Ceil", [sc.op("Sub", [sc.op("Mul", [n, sc.const(pr.keep[i], "float64")]),
                                                          sc.const(1e-6, "float64")])])], to=_I64)
        nprot = sc.op("ReduceSum", [sc.op("Cast", [P], to=_I64), sc.const([1], "int64")], keepdims=0)
        keep = sc.op("Min", [sc.op("Max", [keep, nprot]), l])  # (b,)
        k = sc.op("ReduceMax", [keep], keepdims=1)  # (1,)
        _, top = sc.op("TopK", [scores, k], n_out=2, axis=1, largest=1, sorted=1)
        ar = sc.op("Range", [sc.const(0, "int64"), sc.op("Squeeze", [k, sc.const([0], "int64")]), sc.const(1, "int64")])
        real = sc.op("Less", [sc.op("Unsqueeze", [ar, sc.const([0], "int64")]),
                              sc.op("Unsqueeze", [keep, sc.const([1], "int64")])])  # (b, k)
        order = sc.op("Where", [real, top, sc.op("Add", [top, l])])
        srt, _ = sc.op("TopK", [order, k], n_out=2, axis=1, largest=0, sorted=1)  # ascending: kept first, in order
        index = sc.op("Where", [sc.op("GreaterOrEqual", [srt, l]), sc.op("Sub", [srt, l]), srt])
        D = sc.const([self.c.hidden_size], "int64")
        shape3 = sc.op("Concat", [sc.op("Shape", [index]), D], axis=0)
        index3 = sc.op("Expand", [sc.op("Unsqueeze", [index, sc.const([2], "int64")]), shape3])  # (b, k, D)
        H2 = sc.op("GatherElements", [H, index3], axis=1)
        P2 = sc.op("And", [sc.op("GatherElements", [P, index], axis=1), real])
        return H2, sc.op("Cast", [real], to=_F), P2

    # ------------------------------------------------------------------ the call
    # Around the session everything is numpy: at bs=1 the same bookkeeping as small torch ops cost ~0.4 ms per
    # forward, a third of a forward that exits after one layer (experiments/runtimes_tried.md).
    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Optional[Tensor] = None) -> Outputs:
        c = self.c
        B, L = input_ids.shape
        ex, pr = self.exit, self.prune
        ids = input_ids.numpy().astype(np.int64, copy=False)
        mask = attention_mask.numpy() != 0  # (B, L) bool
        feed = {"input_ids": ids, "attention_mask": mask.astype(np.float32)}
        if ex is not None:  # read at each call: eval-time changes of the threshold or temperatures apply
            feed["threshold"] = np.asarray(ex.threshold, dtype=np.float32)
            feed["temperature"] = ex.temperature.detach().float().numpy()
        if self.carry_protected:  # only pruning and pair pooling read the protected tokens
            protected = self.protected_tokens(input_ids, torch.from_numpy(mask)).numpy()
            if pr is not None and pr.cfg.segments and bool((protected.sum(1) > 1).any()):
                raise RuntimeError("runtime.graph=whole prunes single sentences only; this batch has sentence "
                                   "pairs (mechanism.prune.segments=true). Use runtime.graph=layer")
            if pr is not None and not pr.cfg.segments:
                # [CLS] and a pair's first [SEP] (tokens.py); the segments stay the same: the second begins
                # after two protected tokens either way
                protected = protected & (protected.cumsum(1) <= 2)
            feed["protected"] = protected
        if "token_type_ids" in self._inputs:
            tt = token_type_ids.numpy() if token_type_ids is not None else np.zeros_like(ids)
            feed["token_type_ids"] = tt.astype(np.int64, copy=False)
        feed = {k: v for k, v in feed.items() if k in self._inputs}
        logits, exit_layer, kept, lengths = self.session.run(None, feed)
        static = flops.static_flops_per_row(L, c.num_layers, c.hidden_size, c.intermediate_size, c.num_labels)
        return Outputs(logits=torch.from_numpy(logits), exit_layer=torch.from_numpy(exit_layer),
                       tokens_in=torch.from_numpy(mask.sum(1)), tokens_kept=torch.from_numpy(kept),
                       flops=torch.from_numpy(flops_from_lengths(c, ex, lengths, exit_layer)),
                       static_flops=torch.full((B,), static, dtype=torch.float64))


class _Head(nn.Module):
    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, first: Tensor) -> Tensor:
        return self.head(first)


def _head_file(head: nn.Module, D: int, folder: str, opset: int) -> str:
    import os

    path = os.path.join(folder, "head.onnx")
    with torch.no_grad():
        torch.onnx.export(_Head(head.eval()), (torch.randn(2, D),), path, input_names=["first"],
                          output_names=["logits"], dynamic_axes={"first": {0: "b"}, "logits": {0: "b"}},
                          opset_version=opset, dynamo=False)
    return path
