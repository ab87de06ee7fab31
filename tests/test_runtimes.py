"""Runtimes (runtime=eager|int8|ort|ort_int8) and static peers (peer=hf_int8|ort_fp32|ort_int8[_opt]|truncated).

- fp32 runtimes give the eager logits (1e-4) with the same exits and kept tokens; INT8 runtimes agree with
  fp32 on >= 99% of SST-2 dev predictions (the real fine-tuned MiniLM-L6, when a checkpoint exists);
- every runtime is batch-invariant with the mechanisms on, on the tiny model (bs=1 vs one big padded batch with
  an outlier row): INT8 runtimes quantize activations per token; the old per-call scale (activation=tensor) is
  not. On the real EAT model torch int8 still flips a few exits (fp32 noise amplified by INT8 rounding):
  experiments/runtimes_tried.md;
- a runtime that cannot run a mechanism fails at start-up with a clear message;
- peers and runtimes run through eval.py end to end on model=tiny.
All ORT sessions are real ONNX Runtime sessions of graphs exported from the model under test.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import os
import tempfile
from collections import Counter

import pytest
import torch

from eat.config import (ConfigError, ExitConfig, MechanismConfig, ModelConfig, PruneConfig, RuntimeConfig,
                        SparseConfig, to_run_config)
from eat.mechanisms import build_mechanisms
from eat.model.encoder import Encoder, EncoderConfig
from eat.peers import build_peer
from eat.build import apply_runtime
from eat.runtimes import OrtLayer, cpu_has_vnni
from torch import nn
from tests.conftest import GLUE_DIR, ROOT, compose_cfg, needs_glue, run_script, tiny_overrides



def _tiny_eat(seed: int = 0, sparse: bool = True, pooling: str = "mean", rows=None) -> Encoder:
    """A tiny encoder with every mechanism that acts between layers: pruning by received attention (the ORT
    layer's second output), a local window narrower than the rows (the L x L mask; not with sparse=False), and
    exits (their heads pooling as `pooling`; the threshold set on `rows` (ids, mask), default _rows())."""
    torch.manual_seed(seed)
    c = EncoderConfig(vocab_size=300, hidden_size=64, num_layers=4, num_heads=4, intermediate_size=128)
    mc = MechanismConfig(name="prune+sparse+exit" if sparse else "prune+exit",
                         prune=PruneConfig(keep_ratios=[0.7, 0.7]),
                         sparse=SparseConfig(window=6) if sparse else None,
                         exit=ExitConfig(threshold=0.8, pooling=pooling))
    enc = Encoder(c, build_mechanisms(mc, c)).eval()
    ex = enc.mechanisms["exit"]
    with torch.no_grad():  # varied exit heads, and a threshold that lets about half the rows leave at layer 1
        for head in ex.heads.values():
            head[1].weight.normal_(0, 0.5)
        ex.collect_all = True
        first = enc(*(rows or _rows()[:2])).head_logits[0].softmax(-1).max(-1).values
        ex.collect_all = False
    # midway across the widest gap between neighbouring confidences in the middle third: no row sits on the
    # threshold, where float noise between batch shapes (or INT8 rounding) would decide
    srt = first.sort().values
    n = len(srt)
    i = max(range(n // 3, 2 * n // 3), key=lambda j: float(srt[j + 1] - srt[j]))
    ex.threshold = float(srt[i] + srt[i + 1]) / 2
    return enc


def _rows(n: int = 24, seed: int = 1):
    """n rows of different real lengths (4..28 tokens), right-padded into one batch."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 29, (n,), generator=g)
    L = int(lengths.max())
    ids = torch.randint(110, 300, (n, L), generator=g)  # no [SEP] (102): single sentences
    ids[:, 0] = 101
    mask = (torch.arange(L)[None] < lengths[:, None]).long()
    return ids * mask, mask, lengths


def _runtime(enc: Encoder, name: str) -> Encoder:
    """name: a runtime, or runtime:activation (ort_int8:row)."""
    rt, _, activation = name.partition(":")
    return apply_runtime(copy.deepcopy(enc), RuntimeConfig(name=rt, **({"activation": activation} if activation else {})))


def test_fp32_ort_runtime_equals_eager_logits_exits_and_kept_tokens():
    torch.set_num_threads(1)
    enc = _tiny_eat()
    ids, mask, _ = _rows()
    ort = _runtime(enc, "ort")
    assert all(isinstance(layer, OrtLayer) for layer in ort.layers)
    prune_at = set(enc.mechanisms["prune"].keep)  # layers that prune by received attention get that variant
    assert [i for i, layer in enumerate(ort.layers) if True in layer.sessions] == sorted(prune_at)
    with torch.no_grad():
        a, b = enc(ids, mask), ort(ids, mask)
    assert a.exit_layer.unique().numel() > 1, "the check needs rows exiting at different layers"
    went_on = a.exit_layer > 1  # rows that did not exit after layer 1 were pruned there
    assert (a.tokens_kept[went_on, 1] < a.tokens_in[went_on]).all(), "the check needs pruning to act"
    assert torch.allclose(a.logits, b.logits, atol=1e-4, rtol=0)
    assert torch.equal(a.exit_layer, b.exit_layer) and torch.equal(a.tokens_kept, b.tokens_kept)
    assert torch.allclose(a.flops, b.flops)


def test_fp32_ort_peer_equals_eager_static_logits():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    c = EncoderConfig(vocab_size=300, hidden_size=64, num_layers=3, num_heads=4, intermediate_size=128)
    enc = Encoder(c).eval()
    ids, mask, _ = _rows()
    tt = torch.zeros_like(ids)
    tt[:, 6:] = 1
    peer = build_peer("ort_fp32", enc)
    with torch.no_grad():
        a, b = enc(ids, mask, tt), peer(ids, mask, tt)
    assert torch.allclose(a.logits, b.logits, atol=1e-4, rtol=0)
    assert torch.equal(b.exit_layer, torch.full_like(b.exit_layer, 3)) and torch.equal(b.flops, a.static_flops)


def test_optimized_ort_int8_peer_fuses_the_layers_and_keeps_the_int8_peers_predictions():
    """peer=ort_int8_opt: ORT's transformer optimizer fuses every layer's attention (then QAttention in INT8), and
    its logits stay as close to fp32 as the plain INT8 peer's."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    c = EncoderConfig(vocab_size=300, hidden_size=64, num_layers=3, num_heads=4, intermediate_size=128)
    enc = Encoder(c).eval()
    ids, mask, _ = _rows()
    opt, plain = build_peer("ort_int8_opt", enc), build_peer("ort_int8", enc)
    assert opt.op_types["QAttention"] == 3 and opt.op_types["SkipLayerNormalization"] >= 3, opt.op_types
    assert "QAttention" not in plain.op_types and "Softmax" in plain.op_types
    with torch.no_grad():
        ref, a, b = enc(ids, mask).logits, opt(ids, mask).logits, plain(ids, mask).logits
    err_opt, err_plain = (a - ref).abs().max(), (b - ref).abs().max()
    assert err_opt < max(2 * err_plain, 1e-3), (err_opt, err_plain)
    assert torch.equal(opt(ids, mask).exit_layer, torch.full((len(ids),), 3))


@pytest.mark.parametrize("weights", ["s8", "s7", "u8"])
def test_row_int8_linear_exports_integer_ops_that_compute_its_torch_arithmetic(weights):
    """runtime.activation=row: each Linear of the layer graph is QuantizeLinear -> MatMulInteger with its own INT8
    weights (no quantizer pass, no per-call DynamicQuantizeLinear), and ORT computes what RowInt8Linear computes in
    torch, including for a row with an outlier feature, and row by row whatever the batch. With int8 weights (s8)
    that holds on CPUs with VNNI only: without it, ORT's u8s8 kernel saturates 16-bit sums of two products (max
    error 4.1 here on an AVX2 host, 2026-12-07); with int8 weights on 7 bits (s7: no pair of products overflows 16
    bits) or uint8 weights (u8) it holds on every CPU."""
    import onnx

    from eat.runtimes import RowInt8Linear, cpu_has_vnni, ort_session, quiet_export

    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    row = RowInt8Linear(lin, weights=weights).eval()
    x = torch.randn(3, 7, 64)
    x[1, 2, 5] = 40.0  # an outlier token: it must not move the other tokens
    with tempfile.TemporaryDirectory() as folder, quiet_export(), torch.no_grad():
        path = os.path.join(folder, "row.onnx")
        torch.onnx.export(row, (x,), path, input_names=["x"], output_names=["y"], opset_version=17, dynamo=False,
                          dynamic_axes={"x": {0: "b", 1: "l"}, "y": {0: "b", 1: "l"}})
        ops = Counter(n.op_type for n in onnx.load(path).graph.node)
        sess = ort_session(path)
        y_ort = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])
        y_one = torch.from_numpy(sess.run(None, {"x": x[:1, :3].contiguous().numpy()})[0])
        y_torch, y_fp32 = row(x), lin(x)
    assert ops["MatMulInteger"] == 1 and ops["QuantizeLinear"] == 1 and "DynamicQuantizeLinear" not in ops, ops
    assert torch.equal(y_one, y_ort[:1, :3])  # batch-invariant, bit for bit (saturating or not)
    exact = torch.allclose(y_ort, y_torch, atol=1e-5, rtol=0)
    if weights == "s8" and not cpu_has_vnni() and not exact:
        pytest.xfail(f"ORT's u8s8 kernel saturates on this CPU without VNNI (max error "
                     f"{float((y_ort - y_torch).abs().max()):.2f}): runtime.int8_weights=s7 and u8 are exact")
    assert exact, (y_ort - y_torch).abs().max()
    assert (y_ort - y_fp32).abs().mean() < 0.02 * y_fp32.abs().mean()  # INT8, not something else


def _with_outlier_row(ids, mask, lengths, factor: float = 60.0):
    """The rows plus one more whose hidden states are far larger than the others' (its token embeddings scaled
    by `factor` at runtime, see _scale_embeddings): with one activation scale per batch, that row would
    coarsen every other row's INT8 grid, so a batch-dependent scheme cannot pass the invariance check."""
    return torch.cat([ids, ids[:1]]), torch.cat([mask, mask[:1]]), torch.cat([lengths, lengths[:1]])


def _scale_embeddings(enc: Encoder, row: int, factor: float):
    """A forward hook on the embeddings that multiplies row `row` (when the batch has that many rows) by factor:
    a real activation outlier reaching the first layer's Linears, without touching the weights."""
    def hook(_m, _inp, out):
        if out.shape[0] > row:
            out = out.clone()
            out[row] *= factor
        return out
    return enc.embed.register_forward_hook(hook)


@pytest.mark.parametrize("name", ["eager", "ort", "int8", "ort_int8", "ort_int8:row"])
def test_every_runtime_is_batch_invariant_with_mechanisms_on(name):
    """bs=1 vs one batch of 24 padded rows (plus an outlier row): the same predictions, exit layers and kept
    tokens per layer, and the same logits (1e-4 fp32, 5e-3 INT8), in every runtime. INT8 runtimes quantize each token's
    activations with its own scale (runtime.activation=token), so neither padding nor batch-mates move them."""
    torch.set_num_threads(1)
    enc = _runtime(_tiny_eat(), name)
    ids, mask, lengths = _rows()
    n = len(lengths)
    big_ids, big_mask, _ = _with_outlier_row(ids, mask, lengths)
    hook = _scale_embeddings(enc, n, 60.0)  # the extra last row only exists in the batch
    with torch.no_grad():
        big = enc(big_ids, big_mask)
        single = [enc(ids[r:r + 1, :k], mask[r:r + 1, :k]) for r, k in enumerate(lengths.tolist())]
    hook.remove()
    assert big.exit_layer[:n].unique().numel() > 1
    assert torch.equal(big.logits[:n].argmax(-1), torch.cat([s.logits.argmax(-1) for s in single]))
    assert torch.equal(big.exit_layer[:n], torch.cat([s.exit_layer for s in single]))
    assert torch.equal(big.tokens_kept[:n], torch.cat([s.tokens_kept for s in single]))
    # fp32: the same logits up to float noise. INT8: fp32 noise of ~1e-8 between batch shapes (attention,
    # pooling) can tip one activation across an INT8 rounding boundary; one step moves a logit by ~1e-3, while a
    # batch-dependent scale moves it by 0.1-3 here (test below)
    tol = 1e-4 if name in ("eager", "ort") else 5e-3
    assert torch.allclose(big.logits[:n], torch.cat([s.logits for s in single]), atol=tol, rtol=0)


@pytest.mark.parametrize("name", ["int8", "ort_int8"])
def test_per_tensor_int8_activations_are_not_batch_invariant(name):
    """The check above has teeth: the old scheme (runtime.activation=tensor, one activation scale per call) moves
    the logits of the other rows once the outlier row joins the batch."""
    torch.set_num_threads(1)
    enc = apply_runtime(copy.deepcopy(_tiny_eat()), RuntimeConfig(name=name, activation="tensor"))
    ids, mask, lengths = _rows()
    n = len(lengths)
    with torch.no_grad():
        alone = enc(ids, mask).logits
        hook = _scale_embeddings(enc, n, 60.0)
        with_outlier = enc(*_with_outlier_row(ids, mask, lengths)[:2]).logits[:n]
        hook.remove()
    assert (alone - with_outlier).abs().max() > 5e-2  # 10x the tolerance the per-token scheme is held to


def test_token_int8_linear_rows_are_independent_and_closer_to_fp32():
    """TokenInt8Linear: a row's output is bit-identical alone or next to any rows (an outlier, zero padding),
    and nearer fp32 than torch's per-tensor dynamic INT8 on rows of mixed ranges."""
    from eat.runtimes import TokenInt8Linear, quantize_int8

    torch.set_num_threads(1)
    torch.manual_seed(0)
    lin = nn.Linear(64, 96)
    x = torch.randn(2, 7, 64)
    x[1, 3] *= 40  # an outlier token
    x[0, 5:] = 0  # padding-like rows
    q = TokenInt8Linear(lin)
    y = q(x)
    for b in range(2):
        for t in range(7):
            assert torch.equal(q(x[b:b + 1, t:t + 1]), y[b:b + 1, t:t + 1])
    ref = lin(x)
    per_tensor = quantize_int8(nn.Sequential(copy.deepcopy(lin)))(x)
    keep = torch.ones(2, 7, dtype=torch.bool)
    keep[1, 3] = False  # error on the ordinary tokens
    assert (y - ref)[keep].abs().mean() < 0.5 * (per_tensor - ref)[keep].abs().mean()
    assert torch.allclose(y, ref, atol=0.05 * float(ref.abs().max()), rtol=0)


# ----------------------------------------------------------------------------- INT8 vs fp32 on SST-2 dev
def _sst2(split: str):
    with open(GLUE_DIR / "SST-2" / f"{split}.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], torch.tensor([int(r["label"]) for r in rows])


def _sorted_batches(tok, sentences, bs=64):
    """Batches of similar length (sorted), so padding costs little; returns (order, batches)."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i].split()))
    out = []
    for s in range(0, len(order), bs):
        e = tok([sentences[i] for i in order[s:s + bs]], padding=True, truncation=True, max_length=128,
                return_tensors="pt")
        out.append((e["input_ids"], e["attention_mask"], e["token_type_ids"]))
    return torch.tensor(order), out


def _predict(model, batches, order):
    with torch.no_grad():
        pred = torch.cat([model(*b).logits.argmax(-1) for b in batches])
    return torch.empty_like(pred).scatter_(0, order, pred)


def _sst2_checkpoint():
    """A static SST-2 fine-tune of MiniLM-L6: EAT_TEST_SST2_CKPT, else the first seed that
    experiments/sst2_train.sh has trained in this checkout (outputs/sst2/static_seed*/checkpoints/best.ckpt)."""
    if os.environ.get("EAT_TEST_SST2_CKPT"):
        return os.environ["EAT_TEST_SST2_CKPT"]
    found = sorted(ROOT.glob("outputs/sst2/static_seed*/checkpoints/best.ckpt"))
    return str(found[0]) if found else None


@needs_glue
@pytest.mark.skipif(_sst2_checkpoint() is None, reason="needs a fine-tuned SST-2 checkpoint: set EAT_TEST_SST2_CKPT or "
                    "run experiments/sst2_train.sh (INT8 agreement means nothing on an untrained head)")
@pytest.mark.parametrize("name", [pytest.param("int8", marks=pytest.mark.xfail(
    reason="issue 14, open: torch int8 with per-token scales agreed on 99.08% and 99.20% of dev predictions of the "
           "seed-42 static model in earlier sessions and on 98.85% of the retrained one (same dev accuracy) on "
           "2026-12-03: it sits on the line; the ffn_out-fp32 variants below are held to it", strict=False)),
    pytest.param("int8:ffn_out", marks=pytest.mark.xfail(
        reason="issue 14, open: agrees on 99.08% of the retrained seed-42 static model's dev predictions, but torch's "
               "eager fp32 parts differ by ~1e-7 between batch shapes and INT8 rounding turns that into 1 of the first "
               "100 predictions changing between bs=1 and batches of 64 (2026-12-03; ort_int8 holds it)",
        strict=False)), pytest.param("ort_int8", marks=pytest.mark.xfail(
    reason="issue 14, open: ort_int8 with per-token scales and int8 weights agreed on 97.59% of dev predictions of "
           "the seed-42 static model on an AVX2 CPU and 99.08% / 99.77% on others (RESULTS 2h): ORT's u8s8 kernel "
           "saturates without VNNI (runtime.int8_weights=auto now picks u8 there; experiments/runtimes_tried.md)",
    strict=False)), "ort_int8:ffn_out", "ort_int8/row", "ort_int8/row/u8", "ort_int8/row/s7", pytest.param("ort_int8/row/s8", marks=pytest.mark.xfail(
        condition=not cpu_has_vnni(), reason="ORT's u8s8 kernel saturates on CPUs without VNNI: 98.51% on an AVX2 host "
        "(2026-12-07); runtime.int8_weights=auto picks s7 there (7-bit weights, exact)", strict=False)), "ort_int8_opt",
    pytest.param("ort_int8_opt/tensor", marks=pytest.mark.xfail(
        reason="issue 14: the peer's own one INT8 scale per call (per row in runtime.graph=optimized) agreed on 98.62% of "
               "the seed-42 static model's dev predictions (embedding tables fp32; 98.17% with them INT8, as "
               "peer=ort_int8_opt runs): activation=row, the default, holds it (2026-12-08)", strict=False))])
def test_int8_runtimes_agree_with_fp32_on_sst2_dev(name):
    """The real fine-tuned MiniLM-L6 (static, the weights a user deploys): >= 99% of the 872 SST-2 dev
    predictions of each INT8 runtime (per-token activation scales, the default; int8 and ort_int8 also with the FFN
    output projection in fp32, the setting that holds 99% on EAT's model too, RESULTS 2h; ort_int8_opt: the peer's
    optimized graph, one scale per row) agree with fp32, and the first 100 dev sentences alone give the predictions
    of the batches of 64. The INT8 peers (a user's one-line
    quantize_dynamic) are measured, not held to it: experiments/runtimes_tried.md."""
    from eat.build import build_encoder, load_tokenizer

    torch.set_num_threads(1)
    tok = load_tokenizer(ModelConfig())
    enc = build_encoder(ModelConfig(), MechanismConfig(name="none"), 2, tok).eval()
    state = torch.load(_sst2_checkpoint(), map_location="cpu", weights_only=False)["state_dict"]
    enc.load_state_dict({k[len("encoder."):]: v for k, v in state.items()
                         if k.startswith("encoder.") and ".mechanisms." not in k})
    dev_s, dev_y = _sst2("dev")
    order, batches = _sorted_batches(tok, dev_s)
    fp32 = _predict(enc, batches, order)
    assert float((fp32 == dev_y).float().mean()) > 0.8, "not a fine-tuned SST-2 model"
    runtime, _, keep = name.partition(":")  # ort_int8:ffn_out = runtime.fp32_linears=[ffn_out]
    runtime, _, activation = runtime.partition("/")  # ort_int8/row = runtime.activation=row
    activation, _, weights = activation.partition("/")  # ort_int8/row/u8 = ... runtime.int8_weights=u8
    if name.startswith("ort_int8_opt"):  # conf/runtime/ort_int8_opt.yaml: the peer's optimized graph, each row alone
        rt = RuntimeConfig(name="ort_int8", activation=activation or "row", graph="optimized")
    else:
        rt = RuntimeConfig(name=runtime, fp32_linears=[keep] if keep else [], activation=activation or "token",
                           int8_weights=weights or "auto")
    model = apply_runtime(copy.deepcopy(enc), rt)
    batched = _predict(model, batches, order)
    agree = float((batched == fp32).float().mean())
    print(f"runtime={name}: {agree * 100:.2f}% of the 872 dev predictions agree with fp32")  # shown with -rP
    assert agree >= 0.99, f"runtime={name}: {agree:.4f} of dev predictions agree with fp32"
    with torch.no_grad():
        single = torch.cat([model(e["input_ids"], e["attention_mask"], e["token_type_ids"]).logits.argmax(-1)
                            for e in (tok([s], return_tensors="pt") for s in dev_s[:100])])
    assert torch.equal(single, batched[:100]), f"runtime={name}: {int((single != batched[:100]).sum())} of " \
                                               f"100 predictions change between bs=1 and batches of 64"


# ----------------------------------------------------------------------------- start-up checks
def _rc(tmp_path, *extra):
    """The run config eval.py would validate first (to_run_config runs every check, before any data)."""
    return to_run_config(compose_cfg(tiny_overrides(tmp_path, "ckpt_path=x.ckpt", *extra), config_name="eval"))


def test_fused_runtime_refuses_the_blocked_window_kernel_at_start_up(tmp_path):
    with pytest.raises(ConfigError, match=r"runtime=ort cannot run mechanism.sparse .*blocked_min_length=512 "
                                          r"<= task.max_length=1024.*runtime=int8"):
        _rc(tmp_path, "runtime=ort", "mechanism=prune+sparse+exit", "task.max_length=1024")
    _rc(tmp_path, "runtime=int8", "mechanism=prune+sparse+exit", "task.max_length=1024")
    _rc(tmp_path, "runtime=ort_int8", "mechanism=prune+sparse+exit")  # SST-2's 128 tokens: masked window, fine
    # the window only from min_length tokens on: above task.max_length the blocked kernel is never reached
    _rc(tmp_path, "runtime=ort", "mechanism=prune+sparse+exit", "task.max_length=1024", "mechanism.sparse.min_length=2048")


def test_peer_and_runtime_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="runtime.name='int8'.*peer=hf_int8 brings its own runtime"):
        _rc(tmp_path, "mechanism=none", "peer=hf_int8", "runtime=int8")
    with pytest.raises(ConfigError, match="runtime.name='fast'.*allowed values: eager, int8, ort, ort_int8"):
        _rc(tmp_path, "runtime.name=fast")
    with pytest.raises(ConfigError, match="peer='truncated'.*model.keep_layers=K"):
        _rc(tmp_path, "mechanism=none", "peer=truncated")
    with pytest.raises(ConfigError, match="peer='ort_int9'.*allowed values: hf_static, hf_int8, ort_fp32"):
        _rc(tmp_path, "mechanism=none", "peer=ort_int9")
    with pytest.raises(ConfigError, match="runtime.activation='row'.*runtime=ort_int8.*runtime=int8 has token and tensor"):
        _rc(tmp_path, "runtime=int8", "runtime.activation=row")
    with pytest.raises(ConfigError, match="runtime.int8_weights='u4'.*allowed values: auto, s8, s7, u8"):
        _rc(tmp_path, "runtime=ort_int8", "runtime.activation=row", "runtime.int8_weights=u4")
    with pytest.raises(ConfigError, match="runtime.int8_weights='s7'.*activation=row.*s8 and u8"):
        _rc(tmp_path, "runtime=ort_int8", "runtime.int8_weights=s7")
    with pytest.raises(ConfigError, match="trainer.accelerator='gpu'.*runtime=ort_int8.*CPU only"):
        _rc(tmp_path, "runtime=ort_int8", "trainer.accelerator=gpu")
    with pytest.raises(ConfigError, match="trainer.accelerator='gpu'.*peer=ort_int8_opt run on the CPU only"):
        _rc(tmp_path, "mechanism=none", "peer=ort_int8_opt", "trainer.accelerator=gpu")


@pytest.mark.parametrize("activation", ["token", "tensor"])
def test_fp32_linears_stay_fp32_and_the_rest_is_int8(activation):
    enc = _tiny_eat()
    q = apply_runtime(copy.deepcopy(enc), RuntimeConfig(name="int8", activation=activation,
                                                         fp32_linears=["ffn_out", "heads"]))
    fp32 = sorted(n for n, m in q.named_modules() if type(m) is nn.Linear)
    heads = [f"mechanisms.exit.heads.{k}.1" for k in enc.mechanisms["exit"].heads]  # every layer but the last
    assert len(heads) == 3 and fp32 == sorted([f"layers.{i}.ffn_out" for i in range(4)] + heads)
    assert type(q.layers[0].q) is not nn.Linear and type(q.head.out) is not nn.Linear  # quantized
    ids, mask, _ = _rows()
    with torch.no_grad():  # the fp32 Linears are the same modules: their weights are untouched
        assert torch.equal(q.layers[2].ffn_out.weight, enc.layers[2].ffn_out.weight)
        assert q(ids, mask).logits.shape == enc(ids, mask).logits.shape
    with pytest.raises(ConfigError, match=r"runtime.fp32_linears='ffn' is not valid; allowed values: q, k, v, o"):
        RuntimeConfig(name="int8", fp32_linears=["ffn"])
    with pytest.raises(ConfigError, match=r"runtime.fp32_linears=\['q'\].*applies to runtime=int8 and ort_int8 only"):
        RuntimeConfig(name="ort", fp32_linears=["q"])
    with pytest.raises(ConfigError, match=r"ort_int8 quantizes the layer bodies only.*drop \['heads'\]"):
        RuntimeConfig(name="ort_int8", fp32_linears=["ffn_out", "heads"])


@pytest.mark.parametrize("activation", ["token", "tensor"])
def test_ort_int8_keeps_the_named_matmuls_fp32(activation, monkeypatch):
    """runtime=ort_int8 runtime.fp32_linears=[ffn_out]: in every layer graph ORT quantizes q, k, v, o and ffn_in
    (MatMulInteger / DynamicQuantizeMatMul), and ffn_out stays an fp32 MatMul with its eager weights."""
    import onnx

    from eat import runtimes

    graphs = []
    real = runtimes.ort_int8_file

    def spy(path, *args, **kw):  # the embeddings are fp32 by design: only the layer graphs are quantized
        q_path = real(path, *args, **kw)
        graphs.append(onnx.load(q_path))
        return q_path

    monkeypatch.setattr(runtimes, "ort_int8_file", spy)
    enc = _tiny_eat()
    q = apply_runtime(copy.deepcopy(enc), RuntimeConfig(name="ort_int8", activation=activation,
                                                         fp32_linears=["ffn_out"]))
    assert len(graphs) >= 4  # one per layer (and the received-attention variants pruning asks for)
    for g in graphs:
        float_mm = {n.name for n in g.graph.node if n.op_type == "MatMul"}
        quant = {n.name for n in g.graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")}
        assert "/layer/ffn_out/MatMul" in float_mm
        assert not any("/ffn_out/" in n for n in quant) and len(quant) >= 5, sorted(quant)
        # the exit heads fused into the layer graphs (Mechanism.readout) stay fp32, as in the other runtimes
        assert not any("/exit/" in n for n in quant), sorted(quant)
        init = {t.name: t for t in g.graph.initializer}
        b = [n for n in g.graph.node if n.name == "/layer/ffn_out/MatMul"][0].input[1]
        assert init[b].data_type == onnx.TensorProto.FLOAT
    assert sum(any(n.name.startswith("/exit/head/") for n in g.graph.node) for g in graphs) >= 3
    ids, mask, _ = _rows()
    with torch.no_grad():  # the encoder with these sessions still runs end to end
        assert q(ids, mask).logits.shape == enc(ids, mask).logits.shape


# ----------------------------------------------------------------------------- runtime.graph=whole
@pytest.mark.parametrize("name,mechanisms", [("ort", "prune+exit"), ("ort_int8", "prune+exit"), ("ort", "exit"),
                                             ("ort_int8:row", "prune+exit")])
def test_whole_graph_equals_the_layer_loop_and_is_batch_invariant(name, mechanisms):
    """runtime.graph=whole (the whole forward as one ORT graph with nested If nodes, eat/whole_graph.py) gives what
    the layer loop gives: fp32 the eager logits (1e-4), INT8 the per-layer ORT INT8 session's (same layer graphs),
    with the same exit layers, kept tokens per layer and FLOPs; rows leave at several layers and pruning acts. And
    bs=1 equals one padded batch (row compaction, re-padding and pruning in the graph depend on the row only)."""
    from eat.whole_graph import WholeGraphEncoder

    torch.set_num_threads(1)
    enc = _tiny_eat(sparse=False)
    if mechanisms == "exit":
        del enc.mechanisms["prune"]
    ref = enc if name == "ort" else _runtime(enc, name)
    rt, _, activation = name.partition(":")
    whole = apply_runtime(copy.deepcopy(enc), RuntimeConfig(name=rt, graph="whole", activation=activation or "token"))
    assert isinstance(whole, WholeGraphEncoder)
    ids, mask, lengths = _rows()
    with torch.no_grad():
        a, b = ref(ids, mask), whole(ids, mask)
        single = [whole(ids[r:r + 1, :k], mask[r:r + 1, :k]) for r, k in enumerate(lengths.tolist())]
    assert b.exit_layer.unique().numel() > 1
    ran = b.exit_layer >= 2  # rows in flight in layer 2, after the first pruning step (after layer 1 of 4)
    assert bool((b.tokens_kept[ran, 1] < b.tokens_in[ran]).any()) == (mechanisms == "prune+exit")
    assert torch.equal(a.exit_layer, b.exit_layer) and torch.equal(a.tokens_kept, b.tokens_kept)
    assert torch.allclose(a.flops, b.flops, rtol=1e-12) and torch.equal(a.static_flops, b.static_flops)
    assert torch.allclose(a.logits, b.logits, atol=1e-4 if name == "ort" else 1e-5, rtol=0)
    assert torch.equal(b.exit_layer, torch.cat([s.exit_layer for s in single]))
    assert torch.equal(b.tokens_kept, torch.cat([s.tokens_kept for s in single]))
    assert torch.allclose(b.logits, torch.cat([s.logits for s in single]), atol=1e-4 if name == "ort" else 5e-3, rtol=0)
    # the threshold is read at each call (eval-time changes apply): no row is sure of 1.0 + 0.5
    enc.mechanisms["exit"].threshold = whole.exit.threshold = 1.5
    with torch.no_grad():
        assert torch.equal(whole(ids, mask).exit_layer, torch.full_like(b.exit_layer, 4))


def test_whole_graph_refuses_what_it_cannot_run():
    """At start-up (ConfigError naming the key and the way out), and a batch of sentence pairs under segment-wise
    pruning when it arrives; runtime.graph=whole exists for the ORT runtimes only."""
    enc = _tiny_eat()  # with the local window, which acts between layers
    with pytest.raises(ConfigError, match=r"cannot run mechanism.sparse.*runtime.graph=layer"):
        apply_runtime(copy.deepcopy(enc), RuntimeConfig(name="ort", graph="whole"))
    pat = _tiny_eat(sparse=False)
    pat.mechanisms["exit"].cfg.criterion = "patience"
    with pytest.raises(ConfigError, match=r"criterion='patience'.*allowed: \['confidence'\]"):
        apply_runtime(pat, RuntimeConfig(name="ort", graph="whole"))
    with pytest.raises(ConfigError, match=r"runtime.graph.*whole.*ort and ort_int8 only"):
        RuntimeConfig(name="int8", graph="whole")
    with pytest.raises(ConfigError, match=r"runtime.graph.*allowed"):
        RuntimeConfig(name="ort", graph="fused")
    whole = apply_runtime(_tiny_eat(sparse=False), RuntimeConfig(name="ort", graph="whole"))
    ids, mask, _ = _rows()
    ids[:, 3] = ids[:, 6] = 102  # two [SEP]: sentence pairs
    with pytest.raises(RuntimeError, match="single sentences only"), torch.no_grad():
        whole(ids, mask)


@pytest.mark.parametrize("name", ["ort", "ort_int8:row"])
def test_whole_graph_runs_sentence_pairs_with_exits_alone(name):
    """The pair tasks' points are exits alone (RESULTS 3.2), which the whole graph runs: with token types of two
    segments it gives the layer loop's logits and exit layers, and the token types reach the graph (zeros instead
    give other logits)."""
    torch.set_num_threads(1)
    enc = _tiny_eat(sparse=False)
    del enc.mechanisms["prune"]
    rt, _, activation = name.partition(":")
    ref = enc if name == "ort" else _runtime(enc, name)
    whole = apply_runtime(copy.deepcopy(enc), RuntimeConfig(name=rt, graph="whole", activation=activation or "token"))
    ids, mask, lengths = _rows()
    cut = (lengths // 2).clamp(min=2)  # [CLS] a [SEP] b [SEP]
    rows = torch.arange(len(ids))
    ids[rows, cut], ids[rows, lengths - 1] = 102, 102
    tt = ((torch.arange(ids.shape[1])[None] > cut[:, None]) & mask.bool()).long()
    with torch.no_grad():
        a, b = ref(ids, mask, tt), whole(ids, mask, tt)
        zeros = whole(ids, mask, torch.zeros_like(tt))
    assert torch.equal(a.exit_layer, b.exit_layer)
    assert torch.allclose(a.logits, b.logits, atol=1e-4 if name == "ort" else 1e-5, rtol=0)
    assert not torch.allclose(b.logits, zeros.logits, atol=1e-3)


def _pairs(every: int = 3):
    """_rows() as sentence pairs ([CLS] a [SEP] b [SEP]), but every `every`-th row left a single sentence; and the
    token types of the pairs' second segments."""
    ids, mask, lengths = _rows()
    cut = (lengths // 2).clamp(min=2)
    pair = torch.arange(len(ids)) % every != 0
    rows = torch.arange(len(ids))[pair]
    ids[rows, cut[pair]], ids[rows, lengths[pair] - 1] = 102, 102
    tt = ((torch.arange(ids.shape[1])[None] > cut[:, None]) & mask.bool() & pair[:, None]).long()
    return ids, mask, lengths, tt


@pytest.mark.parametrize("name", ["ort", "ort_int8:row"])
def test_whole_graph_runs_pair_pooled_exits(name):
    """mechanism.exit.pooling=pair (the heads read both segments' means, told apart by the protected [SEP]s) runs
    inside the whole graph: on a batch of pairs and single sentences it gives the layer loop's logits and exit
    layers (rows leaving at several layers, so the protected tokens ride through row compaction), bs=1 equals
    the batch, and with pruning of single sentences the protected tokens also ride through the gathers. A graph
    that lost the segments would pool pairs as single sentences: the last check shows that moves the logits."""
    from eat.whole_graph import WholeGraphEncoder

    torch.set_num_threads(1)
    ids, mask, lengths, tt = _pairs()
    enc = _tiny_eat(sparse=False, pooling="pair", rows=(ids, mask))
    del enc.mechanisms["prune"]
    rt, _, activation = name.partition(":")
    cfg = RuntimeConfig(name=rt, graph="whole", activation=activation or "token")
    ref = enc if name == "ort" else _runtime(enc, name)
    whole = apply_runtime(copy.deepcopy(enc), cfg)
    assert isinstance(whole, WholeGraphEncoder)
    with torch.no_grad():
        a, b = ref(ids, mask, tt), whole(ids, mask, tt)
        single = [whole(ids[r:r + 1, :k], mask[r:r + 1, :k], tt[r:r + 1, :k]) for r, k in enumerate(lengths.tolist())]
    assert b.exit_layer.unique().numel() > 1, "the check needs rows exiting at different layers"
    assert torch.equal(a.exit_layer, b.exit_layer) and torch.allclose(a.flops, b.flops, rtol=1e-12)
    assert torch.allclose(a.logits, b.logits, atol=1e-4 if name == "ort" else 1e-5, rtol=0)
    assert torch.equal(b.exit_layer, torch.cat([s.exit_layer for s in single]))
    assert torch.allclose(b.logits, torch.cat([s.logits for s in single]), atol=1e-4 if name == "ort" else 5e-3, rtol=0)
    # pruning of single sentences with pair-pooled heads (v = 0 there): the same as the layer loop
    both = _tiny_eat(sparse=False, pooling="pair")
    ids1, mask1, _ = _rows()
    with torch.no_grad():
        a1 = (both if name == "ort" else _runtime(both, name))(ids1, mask1)
        b1 = apply_runtime(copy.deepcopy(both), cfg)(ids1, mask1)
    assert bool((b1.tokens_kept[:, 1] < b1.tokens_in).any()) and b1.exit_layer.unique().numel() > 1
    assert torch.equal(a1.exit_layer, b1.exit_layer) and torch.equal(a1.tokens_kept, b1.tokens_kept)
    assert torch.allclose(a1.logits, b1.logits, atol=1e-4 if name == "ort" else 1e-5, rtol=0)
    # the segments matter: the same pairs with their [SEP]s made ordinary tokens give other head logits
    plain = ids.clone()
    plain[plain == 102] = 150
    ex = enc.mechanisms["exit"]
    with torch.no_grad():
        ex.collect_all = True
        z_pair, z_plain = enc(ids, mask, tt).head_logits[0], enc(plain, mask, tt).head_logits[0]
        ex.collect_all = False
    assert not torch.allclose(z_pair, z_plain, atol=1e-3)


# ----------------------------------------------------------------------------- runtime.graph=optimized
def _exits_only(seed: int = 0, pooling: str = "mean") -> Encoder:
    enc = _tiny_eat(seed, sparse=False, pooling=pooling)
    del enc.mechanisms["prune"]
    return enc


def _optimized(enc: Encoder, name: str):
    """name: ort, or ort_int8:ACTIVATION (tensor or row)."""
    from eat.optimized_graph import OptimizedGraphEncoder

    rt, _, activation = name.partition(":")
    model = apply_runtime(copy.deepcopy(enc), RuntimeConfig(name=rt, graph="optimized", activation=activation or "token"))
    assert isinstance(model, OptimizedGraphEncoder)
    return model


@pytest.mark.parametrize("name", ["ort", "ort_int8:tensor", "ort_int8:row"])
def test_optimized_graph_is_the_peer_with_exits_and_is_batch_invariant(name):
    """runtime.graph=optimized (eat/optimized_graph.py: the peer's optimized ORT graph, exit decisions grafted in
    after its layers, each row run alone): fp32 gives eager's logits (1e-4) and exit layers, and each row's kept
    tokens and FLOPs as eager counts them for that row alone (no padding); rows leave at several layers. A batch gives
    bit for bit what each row gives alone (bs=1). With no row sure the graph computes what the graph without exit
    heads computes, bit for bit (fp32: peer=ort_fp32's logits, 1e-4)."""
    torch.set_num_threads(1)
    enc = _exits_only()
    opt = _optimized(enc, name)
    ids, mask, lengths = _rows()
    with torch.no_grad():
        b = opt(ids, mask)
        alone = [(ids[r:r + 1, :k], mask[r:r + 1, :k]) for r, k in enumerate(lengths.tolist())]
        single = [opt(*x) for x in alone]
        eager = [enc(*x) for x in alone]
    assert b.exit_layer.unique().numel() > 1
    for field in ("logits", "exit_layer", "tokens_kept", "flops"):
        assert torch.equal(getattr(b, field), torch.cat([getattr(s, field) for s in single])), field
    assert torch.equal(b.tokens_in, lengths)
    ref = torch.cat([e.exit_layer for e in eager])
    if name == "ort":
        assert torch.equal(b.exit_layer, ref)
        assert torch.allclose(b.logits, torch.cat([e.logits for e in eager]), atol=1e-4, rtol=0)
        assert torch.equal(b.tokens_kept, torch.cat([e.tokens_kept for e in eager]))
        assert torch.allclose(b.flops, torch.cat([e.flops for e in eager]), rtol=1e-12)
    else:  # INT8 rounding may move a row across the threshold, but the tiny model's rows sit far from it
        assert float((b.exit_layer == ref).float().mean()) >= 0.9
    # the threshold is read at each call; no row is sure of 1.5: every row runs the whole graph
    opt.exit.threshold = 1.5
    static = copy.deepcopy(enc)
    static.mechanisms = nn.ModuleDict()
    plain = _optimized(static, name)  # the same graph without exit heads
    with torch.no_grad():
        never, ref_logits = opt(ids, mask), plain(ids, mask).logits
    assert torch.equal(never.exit_layer, torch.full_like(b.exit_layer, 4))
    assert torch.equal(never.logits, ref_logits)
    if name == "ort":
        with torch.no_grad():
            peer = build_peer("ort_fp32", static)
            assert torch.allclose(never.logits, torch.cat([peer(*x).logits for x in alone]), atol=1e-4, rtol=0)


def test_optimized_graph_runs_pair_pooled_exits():
    """Pair-pooled heads read the segments from the protected tokens ([CLS], [SEP]s), which each row carries into
    the graph: sentence pairs with token types give eager's logits and exit layers row by row (fp32)."""
    torch.set_num_threads(1)
    enc = _exits_only(pooling="pair")
    opt = _optimized(enc, "ort")
    ids, mask, lengths = _rows()
    tt = torch.zeros_like(ids)
    for r, k in enumerate(lengths.tolist()):  # [CLS] a [SEP] b [SEP]
        cut = max(2, k // 2)
        ids[r, cut], ids[r, k - 1] = 102, 102
        tt[r, cut + 1:k] = 1
    with torch.no_grad():
        b = opt(ids, mask, tt)
        eager = [enc(ids[r:r + 1, :k], mask[r:r + 1, :k], tt[r:r + 1, :k]) for r, k in enumerate(lengths.tolist())]
    assert torch.equal(b.exit_layer, torch.cat([e.exit_layer for e in eager]))
    assert torch.allclose(b.logits, torch.cat([e.logits for e in eager]), atol=1e-4, rtol=0)


def test_optimized_graph_refuses_what_it_cannot_run():
    """At start-up, a ConfigError naming the key, the allowed values and the way out."""
    with pytest.raises(ConfigError, match=r"cannot run mechanism.prune.*allowed mechanisms: \['exit'\].*graph=whole"):
        apply_runtime(_tiny_eat(sparse=False), RuntimeConfig(name="ort", graph="optimized"))
    pat = _exits_only()
    pat.mechanisms["exit"].cfg.criterion = "entropy"
    with pytest.raises(ConfigError, match=r"criterion='entropy'.*allowed: \['confidence'\]"):
        apply_runtime(pat, RuntimeConfig(name="ort", graph="optimized"))
    with pytest.raises(ConfigError, match=r"runtime.activation.*'token'.*has tensor.*and row"):
        RuntimeConfig(name="ort_int8", graph="optimized")
    with pytest.raises(ConfigError, match=r"runtime.int8_weights.*'s7'.*auto, s8 or u8"):
        RuntimeConfig(name="ort_int8", graph="optimized", activation="row", int8_weights="s7")
    with pytest.raises(ConfigError, match=r"runtime.fp32_linears"):
        RuntimeConfig(name="ort_int8", graph="optimized", activation="row", fp32_linears=["ffn_out"])
    with pytest.raises(ConfigError, match=r"runtime.graph.*ort and ort_int8 only"):
        RuntimeConfig(name="int8", graph="optimized")
    rob = _exits_only()
    rob.c = dataclasses.replace(rob.c, arch="roberta")
    with pytest.raises(ConfigError, match=r"arch 'roberta'.*allowed: \['bert'\]"):
        apply_runtime(rob, RuntimeConfig(name="ort", graph="optimized"))


# ----------------------------------------------------------------------------- end to end (eval.py)
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("static")
    r = run_script("train.py", tiny_overrides(tmp, "mechanism=none", "eval_batch_sizes=[8]", "threads=1"), tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    return str(tmp / "run" / "checkpoints" / "best.ckpt")


def _results(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@needs_glue
def test_peers_and_runtimes_run_through_eval_py(tmp_path, tiny_ckpt):
    """One multirun process: the peers on the static checkpoint, then the runtimes with pruning + window on."""
    r = run_script("eval.py", ["-m", *tiny_overrides(tmp_path, "threads=1", f"ckpt_path={tiny_ckpt}"),
                               "mechanism=none", "peer=hf_static,hf_int8,ort_fp32,ort_int8,ort_int8_opt"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _results(tmp_path / "results.csv")
    assert {row["model"] for row in rows} == {"hf_static", "hf_int8", "ort_fp32", "ort_int8", "ort_int8_opt"}
    acc = {(row["model"], row["batch_size"]): float(row["accuracy"]) for row in rows}
    assert acc[("ort_fp32", "1")] == acc[("hf_static", "1")] == acc[("ort_fp32", "8")]
    assert all(float(row["avg_exit_layer"]) == 4 for row in rows)

    r = run_script("eval.py", ["-m", *tiny_overrides(tmp_path, "threads=1", f"ckpt_path={tiny_ckpt}"),
                               f"results_csv={tmp_path}/rt_${{runtime.name}}.csv",  # one results file per runtime
                               "mechanism=prune+sparse", "mechanism.sparse.window=4",
                               "runtime=eager,ort,int8,ort_int8"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    by = {name: {row["batch_size"]: row for row in _results(tmp_path / f"rt_{name}.csv")}
          for name in ("eager", "ort", "int8", "ort_int8")}
    assert all(set(rows) == {"1", "8"} for rows in by.values())
    assert float(by["eager"]["8"]["avg_token_retention"]) < 1.0  # pruning acted
    for bs in ("1", "8"):  # fp32 ORT: the eager accuracy, FLOPs and kept tokens, at either batch size
        for col in ("accuracy", "avg_token_retention", "gflops_per_example"):
            assert by["ort"][bs][col] == by["eager"][bs][col], col

    # the whole forward as one ORT graph: what the per-layer sessions give, through eval.py's build path
    r = run_script("eval.py", ["-m", *tiny_overrides(tmp_path, "threads=1", f"ckpt_path={tiny_ckpt}"),
                               f"results_csv={tmp_path}/graph_${{runtime.graph}}.csv", "mechanism=prune",
                               "runtime=ort", "runtime.graph=layer,whole"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    by = {g: {row["batch_size"]: row for row in _results(tmp_path / f"graph_{g}.csv")} for g in ("layer", "whole")}
    for bs in ("1", "8"):
        for col in ("accuracy", "avg_token_retention", "gflops_per_example"):
            assert by["whole"][bs][col] == by["layer"][bs][col], col


@needs_glue
def test_optimized_graph_runs_through_eval_py(tmp_path, tiny_ckpt):
    """runtime.graph=optimized through eval.py's build path (one multirun): fp32 gives the per-layer sessions'
    accuracy at both batch sizes and their FLOPs at bs=1 (it runs each row without padding, so at bs=8 it counts
    fewer); the config node runtime=ort_int8_opt (INT8, per-token FFN scales) runs to a result row too."""
    r = run_script("eval.py", ["-m", *tiny_overrides(tmp_path, "threads=1", f"ckpt_path={tiny_ckpt}"),
                               f"results_csv={tmp_path}/opt_${{runtime.graph}}.csv", "mechanism=none",
                               "runtime=ort", "runtime.graph=layer,optimized"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    by = {g: {row["batch_size"]: row for row in _results(tmp_path / f"opt_{g}.csv")} for g in ("layer", "optimized")}
    for bs in ("1", "8"):
        assert by["optimized"][bs]["accuracy"] == by["layer"][bs]["accuracy"]
    assert by["optimized"]["1"]["gflops_per_example"] == by["layer"]["1"]["gflops_per_example"]
    assert float(by["optimized"]["8"]["gflops_per_example"]) <= float(by["layer"]["8"]["gflops_per_example"])
    r = run_script("eval.py", [*tiny_overrides(tmp_path, "threads=1", f"ckpt_path={tiny_ckpt}"), "mechanism=none",
                               f"results_csv={tmp_path}/int8.csv", "runtime=ort_int8_opt"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {row["batch_size"] for row in _results(tmp_path / "int8.csv")} == {"1", "8"}


@needs_glue
def test_unrunnable_runtime_fails_at_start_up_through_eval_py(tmp_path, tiny_ckpt):
    r = run_script("eval.py", tiny_overrides(tmp_path, f"ckpt_path={tiny_ckpt}", "mechanism=sparse", "runtime=ort",
                                             "mechanism.sparse.blocked_min_length=16", "mechanism.sparse.min_length=0"),
                   tmp_path)
    assert r.returncode == 2
    assert "runtime=ort cannot run mechanism.sparse" in r.stderr
    assert not (tmp_path / "results.csv").exists()


@needs_glue
def test_truncated_peer_trains_with_keep_layers_and_evaluates(tmp_path):
    """experiments/train_truncated.sh on model=tiny (4 layers) with K=2 for STEPS=4 steps, then eval.py peer=truncated."""
    import subprocess

    out = tmp_path / "trunc"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EAT_GLUE_DIR": str(GLUE_DIR), "EAT_TRUNCATED_OUT": str(out),
           "EAT_TRUNCATED_RESULTS": str(tmp_path / "train.csv"), "STEPS": "4"}  # 4 of the epoch's 6 steps
    small = [o for o in tiny_overrides(tmp_path) if not o.startswith(("results_csv", "data.dir", "eval_batch", "output_dir"))]
    r = subprocess.run(["bash", str(ROOT / "experiments" / "train_truncated.sh"), "0", "2", *small, "threads=1"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = out / "checkpoints" / "best.ckpt"
    sd = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert {k.split(".")[2] for k in sd if k.startswith("encoder.layers.")} == {"0", "1"}
    r = run_script("eval.py", tiny_overrides(tmp_path, "threads=1", f"ckpt_path={ckpt}", "mechanism=none",
                                             "peer=truncated", "model.keep_layers=2", "runtime=int8"), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _results(tmp_path / "results.csv")
    assert {row["model"] for row in rows} == {"truncated"} and all(float(row["avg_exit_layer"]) == 2 for row in rows)
    # the same checkpoint without keep_layers: one clear error naming the missing layers
    r = run_script("eval.py", tiny_overrides(tmp_path, f"ckpt_path={ckpt}", "mechanism=none"), tmp_path)
    assert r.returncode == 2 and "lacks weights" in r.stderr and "layers.2" in r.stderr


def test_truncated_script_names_an_unknown_task():
    """TASK picks the protocol (sst2, or mnli/qqp offline); anything else is refused before any training."""
    import subprocess

    r = subprocess.run(["bash", str(ROOT / "experiments" / "train_truncated.sh"), "0", "2"],
                       env={**os.environ, "TASK": "xnli"}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "TASK=xnli" in r.stderr and "sst2, mnli, qqp" in r.stderr


def test_pair_pooled_exits_run_in_torch_beside_the_ort_layers():
    """pooling=pair has no fused readout (the layer graph has no segments): ORT fp32 still gives eager's logits
    and exits on sentence pairs."""
    torch.manual_seed(0)
    c = EncoderConfig(vocab_size=300, hidden_size=64, num_layers=4, num_heads=4, intermediate_size=128)
    mc = MechanismConfig(name="exit", exit=ExitConfig(pooling="pair", criterion="patience", patience=1))
    enc = Encoder(c, build_mechanisms(mc, c)).eval()
    ids, mask, lengths = _rows()
    for r, n in enumerate(lengths.tolist()):
        ids[r, n // 2], ids[r, n - 1] = c.sep_token_id, c.sep_token_id  # pairs: [CLS] a [SEP] b [SEP]
    with torch.no_grad():
        a, b = enc(ids, mask), _runtime(enc, "ort")(ids, mask)
    assert a.exit_layer.unique().numel() > 1, "the check needs rows exiting at different layers"
    assert torch.allclose(a.logits, b.logits, atol=1e-4, rtol=0) and torch.equal(a.exit_layer, b.exit_layer)
