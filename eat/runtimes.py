"""Runtimes for the evaluated encoder (`runtime=` config group), applied after the weights are loaded.

- eager: fp32 PyTorch, the layer loop as trained.
- int8: every nn.Linear (layers, final head, exit heads) INT8 x INT8 with INT8 weights per output channel by
  default (`runtime.per_channel`; ORT INT8 likewise) and, by default (`runtime.activation=token`), one INT8
  scale and offset per token (TokenInt8Linear): a token's result does not depend on its batch-mates or on
  padding, so predictions, exits and pruning are batch-invariant, and outlier tokens no longer coarsen every
  other token's grid. `runtime.activation=tensor`: `quantize_dynamic`'s one scale per call (the old default).
- ort / ort_int8: each layer body is exported on its own (`torch.onnx.export`, dynamic batch and length) and
  run as one ONNX Runtime session (fp32, or with ORT dynamic INT8; with activation=token each Linear's input
  is normalized per token inside the graph first, see TokenNormLinear; with activation=row each Linear is
  exported as INT8 ops with one symmetric scale per token, see RowInt8Linear; weights int8, int8 on 7 bits or
  uint8 by runtime.int8_weights, since ORT's int8-weight kernel saturates on CPUs without VNNI). Embeddings, heads and the
  mechanisms stay in PyTorch and act between layers, so rows still exit and tokens are still gathered.
  A layer session takes the hidden states and the additive mask of the attention function the mechanisms
  chose (`MaskedAttention.allowed`: dense, or the local window), and a second variant also returns the
  attention each token received, for pruning with criterion=attention.
- runtime.graph=whole (ort / ort_int8): the same layer graphs, the embeddings, the exit decisions, row compaction,
  pruning and the final head composed into ONE ORT graph of nested If nodes (eat/whole_graph.py), so no Python
  runs between layers: at bs=1 that Python cost about as much as a layer's ORT work.
- runtime.graph=optimized (ort / ort_int8; conf/runtime/ort_int8_opt.yaml): the static peer's own graph (ORT's
  transformer optimizer's fused layers, its quantize_dynamic) with the exit decisions grafted in, each row run alone
  (eat/optimized_graph.py): the fastest at bs=1, exits by confidence only.

Field notes section 8: ORT's intra-op threads spin after each run and slow down whatever runs next, so
every session here has spinning off and as many threads as torch.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import os
import tempfile
import warnings
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eat.config import RuntimeConfig
from eat.model.kernels import MaskedAttention, additive_mask
from eat.model.encoder import Encoder, Layer


@contextlib.contextmanager
def quiet_export():
    """Silence the exporter's tracer warnings (the head size becomes a constant, as intended) and ORT
    quantization's advice to pre-process (shape inference; it changes nothing for these graphs)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def session_options(threads: Optional[int] = None):
    """ORT options for honest timing next to torch: as many intra-op threads as torch, no spinning."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def ort_int8_file(path: str, per_channel: bool = True, keep=(), only_under: str = "", weights: str = "s8",
                  fp32_ops=()) -> str:
    """ORT dynamic quantization of the ONNX file at `path` (QInt8 weights, or QUInt8 with `weights="u8"`; one scale
    per output channel unless not `per_channel`; activations quantized per call), written next to it; returns the
    new file's path. The MatMuls of the Linears named in `keep` (runtime.fp32_linears), and with `only_under` those
    outside that module path (e.g. "/layer/": the heads fused into a layer graph), stay fp32, as do the nodes of the
    op types in `fp32_ops` (e.g. EmbedLayerNormalization, whose tables the quantizer would make INT8)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # torch.onnx names a Linear's MatMul by its module path: /layer/ffn_out/MatMul
    exclude = [n.name for n in onnx.load(path).graph.node if n.op_type in ("MatMul", "Gemm") and
               (any(f"/{part}/" in n.name for part in keep) or not n.name.startswith(only_under))]
    exclude += [f"{n}_MatMul" for n in exclude if n.endswith("Gemm")]  # the quantizer splits a Gemm first
    exclude += [n.name for n in onnx.load(path).graph.node if n.op_type in fp32_ops]
    q_path = path.replace(".onnx", ".int8.onnx")
    # DefaultTensorType: the type of a tensor shape inference cannot follow through ORT's own fused ops (the
    # optimized peer's graph); a fallback only, the plain graphs never need it
    weight_type = QuantType.QUInt8 if weights == "u8" else QuantType.QInt8
    quantize_dynamic(path, q_path, weight_type=weight_type, per_channel=per_channel, nodes_to_exclude=exclude,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return q_path


def ort_session(path, int8: bool = False, per_channel: bool = True, keep=(), only_under: str = ""):
    """An ORT CPU session of the ONNX file at `path` (or a serialized model), after `ort_int8_file` if `int8`."""
    import onnxruntime as ort

    if int8:
        path = ort_int8_file(path, per_channel, keep, only_under)
    return ort.InferenceSession(path, sess_options=session_options(), providers=["CPUExecutionProvider"])


class _LayerGraph(nn.Module):
    """What one ORT layer session computes: the layer body with its attention as a masked dense softmax, then
    the mechanisms' readouts of its output (`Mechanism.readout`: early exit's pooled head), so the decision
    after the layer needs no torch work on the hidden states. received=True also returns the attention each
    key received, summed over heads and real queries (the same quantity as eat.mechanisms.attention, for
    pruning with criterion=attention)."""

    def __init__(self, layer: Layer, received: bool, readouts: Dict[str, nn.Module]):
        super().__init__()
        self.layer, self.received = layer, received
        self.readouts = nn.ModuleDict(readouts)
        # a fourth input, the protected tokens (b, l) bool, when a readout reads the segments (pair-pooled exits)
        self.protected = any(getattr(r, "needs_protected", False) for r in readouts.values())

    def forward(self, x: Tensor, bias: Tensor, query_mask: Tensor, protected: Optional[Tensor] = None):
        def attend(q, k, v, need, p):
            if not self.received:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=bias), None, 0.0
            probs = ((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + bias).softmax(-1)  # (B, H, L, L)
            return probs @ v, (probs * query_mask[:, None, :, None]).sum((1, 2)), 0.0

        h, rec, _ = self.layer(x, attend, self.received)
        read = lambda r: r(h, query_mask, protected) if getattr(r, "needs_protected", False) else r(h, query_mask)  # noqa: E731
        return (h, *([rec] if self.received else []), *(read(r) for r in self.readouts.values()))


def export_layer(graph: _LayerGraph, path: str, opset: int) -> List[str]:
    """Export one layer graph with dynamic batch (b), length (l) and mask rows (q: 1 for a key mask, l for an
    L x L mask such as the local window); returns the names of its outputs."""
    D = graph.layer.attn_norm.normalized_shape[0]
    args = (torch.randn(2, 5, D), torch.zeros(2, 1, 5, 5), torch.ones(2, 5))
    names = ["hidden", "bias", "query_mask"]
    if graph.protected:  # [CLS] and two [SEP]s: a pair, so the export traces both segments
        args += (torch.tensor([[True, False, True, False, True]] * 2),)
        names.append("protected")
    outputs = ["out", *(["received"] if graph.received else []), *(f"readout_{n}" for n in graph.readouts)]
    axes = {"hidden": {0: "b", 1: "l"}, "bias": {0: "b", 2: "q", 3: "l"}, "query_mask": {0: "b", 1: "l"},
            "protected": {0: "b", 1: "l"},
            "out": {0: "b", 1: "l"}, "received": {0: "b", 1: "l"}, **{o: {0: "b"} for o in outputs[1:]}}
    with torch.no_grad():
        torch.onnx.export(graph.eval(), args, path, input_names=names, output_names=outputs,
                          dynamic_axes={k: v for k, v in axes.items() if k in names + outputs},
                          opset_version=opset, dynamo=False)
    return outputs


def layer_file(layer: Layer, folder: str, name: str, int8: bool, received: bool, cfg: RuntimeConfig,
               readouts: Optional[Dict[str, nn.Module]] = None) -> Tuple[str, List[str]]:
    """One layer (with `readouts` and, if `received`, the attention each token received) as an ONNX file in
    `folder`, ORT INT8 if `int8`: (its path, its output names). Shared by the per-layer sessions (OrtLayer) and
    the whole-graph runtime (eat/whole_graph.py), so both run the same layer graphs."""
    weights = int8_weights(cfg)
    if int8 and cfg.activation == "token":  # ORT quantizes the normalized MatMuls (TokenNormLinear)
        layer = swap_linears(copy.deepcopy(layer), lambda lin: TokenNormLinear(lin, cfg.per_channel),
                             cfg.fp32_linears)
    elif int8 and cfg.activation == "row":  # the Linears export as INT8 ops themselves: no quantizer pass
        layer = swap_linears(copy.deepcopy(layer), lambda lin: RowInt8Linear(lin, cfg.per_channel, weights),
                             cfg.fp32_linears)
    path = os.path.join(folder, f"{name}.onnx")
    outputs = export_layer(_LayerGraph(layer, received, dict(readouts or {})), path, cfg.opset)
    if int8 and cfg.activation != "row":  # only the layer body: the readouts (heads) stay fp32, as the final head
        path = ort_int8_file(path, cfg.per_channel, cfg.fp32_linears, only_under="/layer/", weights=weights)
    return path, outputs


class OrtLayer(nn.Module):
    """Drop-in for `Layer` in the encoder's loop: the same call and results, the body run by ONNX Runtime, plus
    the readouts of `readouts` ({plugin name: module}) as a fourth result. Sessions for the received-attention
    variant exist only where a mechanism asks for it."""

    def __init__(self, layer: Layer, folder: str, name: str, int8: bool, with_received: bool, cfg: RuntimeConfig,
                 readouts: Optional[Dict[str, nn.Module]] = None):
        super().__init__()
        self.H, self.D = layer.H, layer.q.in_features
        self.readout_names = list(readouts or {})
        self.sessions = {}
        for received in (False, True) if with_received else (False,):
            path, outputs = layer_file(layer, folder, f"{name}{'_received' if received else ''}", int8, received,
                                       cfg, readouts)
            sess = ort_session(path)
            # the exporter drops an input the graph never reads (query_mask, with no readout and no received)
            self.sessions[received] = (sess, outputs, {i.name for i in sess.get_inputs()})

    def forward(self, x: Tensor, attend, need_received: bool):
        if not isinstance(attend, MaskedAttention):
            # RunConfig refuses the only unmasked attention function (the blocked local kernel) at start-up
            raise RuntimeError("an ORT layer needs the attention as a mask (MaskedAttention); got "
                               f"{type(attend).__name__}")
        if need_received and True not in self.sessions:
            raise RuntimeError("received attention was asked for at a layer exported without it")
        B, L, _ = x.shape
        session, names, inputs = self.sessions[need_received]
        bias = additive_mask(attend.allowed(), torch.float32)
        feed = {"hidden": x.detach().float().contiguous().numpy(), "bias": bias.contiguous().numpy()}
        if "query_mask" in inputs:
            feed["query_mask"] = attend.query_mask.float().contiguous().numpy()
        res = dict(zip(names, (torch.from_numpy(a) for a in session.run(None, feed))))
        readouts = {n: res[f"readout_{n}"] for n in self.readout_names}
        # attention FLOPs as the eager kernels count them (dense and masked-local are both L x L)
        return res["out"], res.get("received"), 4.0 * self.H * L * L * (self.D // self.H), readouts


class OrtEmbeddings(nn.Module):
    """Drop-in for the encoder's `Embeddings` (word + position + token type, LayerNorm) as one fp32 ORT session:
    at bs=1 the seven small torch ops cost more than the session (embeddings are gathers, not quantized)."""

    def __init__(self, embed: nn.Module, folder: str, opset: int):
        super().__init__()
        self.types = embed.token_type is not None
        self.session = ort_session(embeddings_file(embed, folder, opset))

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor]) -> Tensor:
        feed = {"input_ids": input_ids.contiguous().numpy()}
        if self.types:
            tt = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            feed["token_type_ids"] = tt.contiguous().numpy()
        return torch.from_numpy(self.session.run(None, feed)[0])


def embeddings_file(embed: nn.Module, folder: str, opset: int) -> str:
    """The embeddings as an fp32 ONNX file in `folder` (inputs input_ids and, if the model has token types,
    token_type_ids; output hidden); returns its path."""
    types = embed.token_type is not None
    path = os.path.join(folder, "embeddings.onnx")
    ids = torch.ones(2, 5, dtype=torch.long)
    names = ["input_ids", *(["token_type_ids"] if types else [])]
    with torch.no_grad():
        torch.onnx.export(_Embed(embed.eval(), types), (ids, ids.clone()) if types else (ids,), path,
                          input_names=names, output_names=["hidden"],
                          dynamic_axes={n: {0: "b", 1: "l"} for n in [*names, "hidden"]},
                          opset_version=opset, dynamo=False)
    return path


class _Embed(nn.Module):
    def __init__(self, embed: nn.Module, types: bool):
        super().__init__()
        self.embed, self.types = embed, types

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None) -> Tensor:
        return self.embed(input_ids, token_type_ids if self.types else None)


# ----------------------------------------------------------------------------- INT8 with per-token scales
def fake_quant_weight(w: Tensor, per_channel: bool, qmax: int = 127) -> Tuple[Tensor, Tensor]:
    """Symmetric INT8 weights (range +-qmax): (the weights rounded to the INT8 grid, in fp32; the scales). A
    quantizer given the rounded weights finds the same scales and integers again (ORT's quantize_dynamic)."""
    amax = w.abs().amax(1, keepdim=True) if per_channel else w.abs().max().expand(w.shape[0], 1)
    scale = amax.clamp_min(1e-12) / qmax
    return (w / scale).round().clamp(-qmax, qmax) * scale, scale.squeeze(1)


def token_normalize(x2: Tensor, out: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Each row (token) of the (M, K) input mapped onto [-1, 1] by its own offset and half-range:
    x = mid + half * xn (written into `out` if given). Clamped, so float rounding never puts a value past +-1
    (the batch's range must be exactly [-1, 1], whatever the other rows are)."""
    hi, lo = x2.amax(1, keepdim=True), x2.amin(1, keepdim=True)  # (torch.aminmax is ~10x slower here)
    mid, half = (hi + lo) * 0.5, ((hi - lo) * 0.5).clamp_min(1e-8)
    inv = half.reciprocal()
    xn = torch.addcmul(-mid * inv, x2, inv, out=out) if out is not None else torch.addcmul(-mid * inv, x2, inv)
    return xn.clamp_(-1.0, 1.0), mid, half


def bias_of(lin: nn.Linear) -> Tensor:
    """A Linear's bias as a detached fp32 copy (zeros for a Linear without one): the INT8 forms add it in fp32."""
    return lin.bias.detach().float().clone() if lin.bias is not None else torch.zeros(lin.out_features)


def anchor_row(k: int) -> Tensor:
    """One extra row holding -1 and +1: with it, the min and max over the whole normalized batch are exactly
    -1 and +1, so the per-tensor dynamic quantizer (torch's fbgemm kernel, ORT's DynamicQuantizeLinear) picks the
    same scale and zero point for every batch: each token is quantized by its own range only."""
    a = torch.zeros(1, k)
    a[0, 0], a[0, 1] = -1.0, 1.0
    return a


class TokenInt8Linear(nn.Module):
    """nn.Linear as INT8 x INT8 -> INT32 with one activation scale and offset per token (row) and INT8 weights
    per output channel: y = half * (q(xn) @ q(W)^T) + mid * rowsum(q(W)) + b. The product runs in torch's fbgemm
    dynamic INT8 kernel (`quantized::linear_dynamic`) on the normalized rows plus the anchor row, so it costs
    one dynamic INT8 matmul and a few elementwise passes. A token's result depends on that token only: padding
    and batch-mates cannot move its scale (batch invariance), and an outlier token no longer coarsens the grid
    of every other token (agreement with fp32)."""

    def __init__(self, lin: nn.Linear, per_channel: bool = True, reduce_range: bool = True):
        super().__init__()
        w = lin.weight.detach().float()
        wq, scale = fake_quant_weight(w, per_channel)
        qw = torch.quantize_per_channel(wq, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
        self._packed = torch.ops.quantized.linear_prepack(qw, None)
        self.register_buffer("w_sum", qw.dequantize().sum(1))
        self.register_buffer("bias", bias_of(lin))
        self.register_buffer("anchor", anchor_row(w.shape[1]))
        self.in_features, self.out_features, self.reduce_range = w.shape[1], w.shape[0], reduce_range

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()
        m = x2.shape[0]
        buf = torch.empty(m + 1, x2.shape[1])  # the normalized rows and, last, the anchor row
        buf[m] = self.anchor[0]
        _, mid, half = token_normalize(x2, out=buf[:m])
        y = torch.ops.quantized.linear_dynamic(buf, self._packed, self.reduce_range)[:m]
        y = torch.addcmul(torch.addcmul(self.bias, mid, self.w_sum), y, half)
        return y.reshape(*shape[:-1], self.out_features)


class TokenNormLinear(nn.Module):
    """What an ORT INT8 layer graph computes for one nn.Linear, exported in fp32 before ORT's quantize_dynamic:
    each token mapped onto [0, 1] by its own range, one anchor feature and a MatMul with constant (INT8-rounded)
    weights, which ORT then quantizes (DynamicQuantizeLinear over [0, 1] exactly, per-channel INT8 weights):
    y = r * (q(xn) @ q(W)) + lo * rowsum(q(W)) + b, with xn = (x - lo) / r, r = hi - lo. In fp32 it equals the
    Linear up to the weight rounding.

    The quantizer's range is fixed for every batch: 0 is always in it (DynamicQuantizeLinear's rule; each token's
    minimum maps to exactly 0) and the anchor feature, +1 with zero weights, is its maximum. So each token is
    quantized by its own range only (batch invariance), with TokenInt8Linear's 256 levels per token. At bs=1 the
    graph's many small ops, not its matmuls, are the cost, so this form has no reshapes and one pad
    (experiments/runtimes_tried.md)."""

    def __init__(self, lin: nn.Linear, per_channel: bool = True):
        super().__init__()
        wq, _ = fake_quant_weight(lin.weight.detach().float(), per_channel)
        w_t = torch.cat([wq.t(), torch.zeros(1, wq.shape[0])])  # (K + 1, N): MatMul's constant B, anchor last
        self.weight_t = nn.Parameter(w_t.contiguous(), requires_grad=False)
        self.w_sum = nn.Parameter(wq.sum(1), requires_grad=False)
        self.bias = nn.Parameter(bias_of(lin), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:  # (..., K) -> (..., N)
        lo = x.amin(-1, keepdim=True)
        r = (x.amax(-1, keepdim=True) - lo).clamp_min(1e-8)
        # no clamp needed: x - lo >= 0, and a correctly rounded division of x - lo <= r by r is <= 1 (the token's
        # maximum gives exactly 1), so every batch's range is exactly [0, 1]
        xn = F.pad((x - lo) / r, (0, 1), value=1.0)  # (..., K + 1)
        return (xn @ self.weight_t) * r + (lo * self.w_sum + self.bias)


class _RowInt8MatMul(torch.autograd.Function):
    """round(xs) @ q(W)^T * column scales, xs each row already scaled onto [-127, 127]. In torch, that integer
    arithmetic in fp32 (for tests); exported as QuantizeLinear (scale 1, uint8 zero point 128) -> MatMulInteger ->
    Cast -> Mul by the column scales. The Mul after Cast must hold the column scales only: ORT fuses that chain into
    MatMulIntegerToFloat, whose kernel computes wrong results when that Mul also holds per-row scales
    (experiments/runtimes_tried.md). Weights int8 (`u8=False`: ORT's u8s8 kernel, which saturates on CPUs without
    VNNI unless the weights stay within +-63, runtime.int8_weights=s7) or uint8 + 128 with zero point 128 (`u8=True`:
    the u8u8 kernel, exact everywhere, slower)."""

    @staticmethod
    def forward(ctx, xs: Tensor, wq_t: Tensor, w_scale: Tensor, u8: bool = False) -> Tensor:  # (..., K), (K, N), (N,)
        return (torch.round(xs).clamp(-127, 127) @ wq_t) * w_scale

    @staticmethod
    def symbolic(g, xs, wq_t, w_scale, u8=False):
        zp = g.op("Constant", value_t=torch.tensor(128, dtype=torch.uint8))
        xq = g.op("QuantizeLinear", xs, g.op("Constant", value_t=torch.tensor(1.0)), zp)
        if u8:  # ORT folds the add and the cast of a constant at load
            wq = g.op("Cast", g.op("Add", wq_t, g.op("Constant", value_t=torch.tensor(128.0))), to_i=2)  # UINT8
            acc = g.op("MatMulInteger", xq, wq, zp, zp)
        else:
            acc = g.op("MatMulInteger", xq, g.op("Cast", wq_t, to_i=3), zp)  # INT8
        return g.op("Mul", g.op("Cast", acc, to_i=1), w_scale)  # to FLOAT


class RowInt8Linear(nn.Module):
    """runtime.activation=row (ORT INT8 layer graphs): nn.Linear with symmetric INT8 activations, one scale per token
    (its largest |value| / 127), INT8 weights per output channel: y = s * (q(x / s) @ q(W)^T) * s_w + b. Batch-
    invariant like TokenNormLinear, with fewer ops around the matmul (no offset, no anchor feature, no rowsum term):
    11-20% less time per Linear for one sentence (experiments/results/int8_kernels.md). Symmetric: an input whose
    values are mostly on one side (after GELU) gets about one bit less than with TokenNormLinear's own range."""

    def __init__(self, lin: nn.Linear, per_channel: bool = True, weights: str = "s8"):
        super().__init__()
        # runtime.int8_weights: s7 keeps the weights within +-63, so that ORT's u8s8 kernel cannot saturate
        wq, scale = fake_quant_weight(lin.weight.detach().float(), per_channel, 63 if weights == "s7" else 127)
        self.u8 = weights == "u8"  # how the export hands the weights to ORT
        self.wq_t = nn.Parameter((wq / scale[:, None]).round().t().contiguous(), requires_grad=False)  # (K, N)
        self.w_scale = nn.Parameter(scale.float(), requires_grad=False)
        self.bias = nn.Parameter(bias_of(lin), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:  # (..., K) -> (..., N)
        s = x.abs().amax(-1, keepdim=True).clamp_min(1e-8) / 127.0
        return _RowInt8MatMul.apply(x / s, self.wq_t, self.w_scale, self.u8) * s + self.bias


@functools.lru_cache(maxsize=None)  # read once: every layer graph asks
def cpu_has_vnni() -> bool:
    """Whether this CPU has VNNI (AVX512-VNNI or AVX-VNNI): ORT's u8s8 INT8 kernel is exact there; without it (AVX2)
    the kernel adds pairs of u8 x s8 products in 16 bits and saturates (runtime.int8_weights)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def int8_weights(cfg: RuntimeConfig) -> str:
    """runtime.int8_weights resolved for this CPU: auto is s8 where ORT's u8s8 kernel is exact (VNNI); elsewhere s7
    (the same fast kernel, weights within +-63 so that no pair of products overflows 16 bits) where the Linears
    export their own integers (activation=row in EAT's layer graphs), u8 where ORT's quantizer makes them
    (activation=token, and runtime.graph=optimized: the peer's graph)."""
    if cfg.int8_weights != "auto":
        return cfg.int8_weights
    if cpu_has_vnni():
        return "s8"
    return "s7" if cfg.activation == "row" and cfg.graph != "optimized" else "u8"


def swap_linears(module: nn.Module, make, keep=(), _path: str = "") -> nn.Module:
    """Replace every nn.Linear below `module` by make(linear), in place; a Linear with a part of its module path
    in `keep` (runtime.fp32_linears) stays as it is."""
    for name, child in module.named_children():
        path = f"{_path}.{name}" if _path else name
        if isinstance(child, nn.Linear):
            if not _kept(path, keep):
                setattr(module, name, make(child))
        else:
            swap_linears(child, make, keep, path)
    return module


def _kept(path: str, keep) -> bool:
    return any(part in keep for part in path.split("."))


def quantize_int8(module: nn.Module, per_channel: bool = True, keep=()) -> nn.Module:
    """torch dynamic INT8 on every nn.Linear (but those `keep` names), in place (weights INT8 per output channel
    or per tensor, activations quantized per call)."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec = {n: qconfig for n, m in module.named_modules() if isinstance(m, nn.Linear) and not _kept(n, keep)}
    with quiet_export():  # torch's deprecation notice for torch.ao quantization, once per Linear
        return quantize_dynamic(module, spec, dtype=torch.qint8, inplace=True)


def apply_layer_runtime(encoder: Encoder, cfg: RuntimeConfig) -> nn.Module:
    """Switch a loaded encoder (in eval mode, weights final) to a runtime that keeps its layer loop (eager, int8, and
    ort / ort_int8 with runtime.graph=layer); returns it, changed in place. eat.build.apply_runtime dispatches every
    runtime, the graph runtimes (eat/whole_graph.py, eat/optimized_graph.py) included."""
    encoder.eval()
    if cfg.name == "eager":
        return encoder
    if cfg.name == "int8":
        if cfg.activation == "tensor":
            return quantize_int8(encoder, cfg.per_channel, cfg.fp32_linears)
        return swap_linears(encoder, lambda lin: TokenInt8Linear(lin, cfg.per_channel), cfg.fp32_linears)
    if cfg.graph != "layer":
        raise ValueError(f"runtime.graph={cfg.graph} builds its own module: call eat.build.apply_runtime")
    mechanisms = list(encoder.mechanisms.values())
    # exported into a temporary folder, never the repository: the sessions hold the graphs in memory
    with tempfile.TemporaryDirectory(prefix="eat-ort-") as folder, quiet_export():
        layers: List[nn.Module] = []
        for i, layer in enumerate(encoder.layers):
            need = any(m.wants_received_attention(i) for m in mechanisms)
            readouts = {n: r for n, m in encoder.mechanisms.items() if (r := m.readout(i)) is not None}
            layers.append(OrtLayer(layer, folder, f"layer{i}", cfg.name == "ort_int8", need, cfg, readouts))
        encoder.embed = OrtEmbeddings(encoder.embed, folder, cfg.opset)
    encoder.layers = nn.ModuleList(layers)
    return encoder
