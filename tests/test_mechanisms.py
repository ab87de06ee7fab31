"""Mechanisms: neutral settings reproduce the static model; active settings really remove compute."""
from __future__ import annotations

import pytest
import torch

from eat.config import ExitConfig, MechanismConfig, PruneConfig, SparseConfig
from eat.mechanisms import build_mechanisms
from eat.mechanisms import attention
from eat.mechanisms.attention import blocked_local_attention, masked_local_attention
from eat.model import kernels as kernels_module
from eat.model.kernels import dense_attention
from eat.model.encoder import Encoder, EncoderConfig

C = EncoderConfig(vocab_size=200, hidden_size=48, num_layers=6, num_heads=4, intermediate_size=96,
                  max_position_embeddings=600, num_labels=3, sep_token_id=3)


def encoder(mech: MechanismConfig, seed: int = 0) -> Encoder:
    """The same backbone weights for every mechanism (exit heads get their own seeded init)."""
    torch.manual_seed(seed)
    static = Encoder(C)
    enc = Encoder(C, build_mechanisms(mech, C))
    missing, unexpected = enc.load_state_dict(static.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("mechanisms.") for k in missing)
    return enc.eval()


def batch(B=4, L=40, seed=0, pair=True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, C.vocab_size, (B, L), generator=g)
    lengths = torch.randint(6, L + 1, (B,), generator=g)
    lengths[0] = L
    mask = torch.arange(L)[None] < lengths[:, None]
    ids[:, 0] = 2  # [CLS]
    for r, n in enumerate(lengths.tolist()):
        ids[r, n - 1] = 3  # final [SEP]
        if pair:
            ids[r, n // 2] = 3  # first [SEP] of a pair
    return ids.masked_fill(~mask, 0), mask.long()


def run(mech: MechanismConfig, ids, mask, seed=0):
    with torch.no_grad():
        return encoder(mech, seed)(ids, mask)


STATIC = MechanismConfig(name="none")


def test_neutral_pruning_equals_static():
    ids, mask = batch()
    for criterion in ("attention", "norm"):
        m = MechanismConfig(name="prune", prune=PruneConfig(keep_ratios=[1.0, 1.0], criterion=criterion))
        got, want = run(m, ids, mask), run(STATIC, ids, mask)
        assert torch.allclose(got.logits, want.logits, atol=1e-5)
        assert torch.equal(got.tokens_final, want.tokens_in)


def test_window_covering_sequence_equals_static_exactly():
    ids, mask = batch(L=40)
    m = MechanismConfig(name="sparse", sparse=SparseConfig(window=80))  # half window 40 >= L - 1
    assert torch.equal(run(m, ids, mask).logits, run(STATIC, ids, mask).logits)


def test_exit_that_never_fires_equals_static():
    ids, mask = batch()
    m = MechanismConfig(name="exit", exit=ExitConfig(criterion="entropy", threshold=0.0))
    got, want = run(m, ids, mask), run(STATIC, ids, mask)
    assert torch.equal(got.logits, want.logits)
    assert got.exit_layer.tolist() == [C.num_layers] * ids.shape[0]


def test_all_three_neutral_equals_static():
    ids, mask = batch()
    m = MechanismConfig(name="prune+sparse+exit", prune=PruneConfig(keep_ratios=[1.0, 1.0]),
                        sparse=SparseConfig(window=128), exit=ExitConfig(criterion="entropy", threshold=0.0))
    assert torch.allclose(run(m, ids, mask).logits, run(STATIC, ids, mask).logits, atol=1e-5)


@pytest.mark.parametrize("L,block,window", [(37, 8, 6), (64, 16, 32), (101, 32, 10), (130, 64, 32), (9, 4, 2)])
def test_blocked_local_equals_dense_masked_reference(L, block, window):
    g = torch.Generator().manual_seed(L)
    B, H, dh = 3, 4, 8
    q, k, v = (torch.randn(B, H, L, dh, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(L)[None] < torch.tensor([L, L - 5, max(2, L // 3)])[:, None]  # padding, ragged rows
    cls = torch.zeros(B, L, dtype=torch.bool)
    cls[:, 0] = True
    pair = cls.clone()  # [CLS] and the [SEP]s of a pair: a different number of global tokens per row
    for r, n in enumerate(mask.sum(1).tolist()):
        pair[r, n - 1] = True
        pair[r, n // 2] = r != 1
    second = pair | ((torch.arange(L)[None] > (mask.sum(1) // 2)[:, None]) & mask)  # global_segment=second
    for glob in (None, cls, pair, second):
        want, want_recv, _ = masked_local_attention(q, k, v, mask, window // 2, glob, need_received=True)
        got, got_recv, _ = blocked_local_attention(q, k, v, mask, window // 2, glob, block, need_received=True)
        ctx_only, none_recv, _ = blocked_local_attention(q, k, v, mask, window // 2, glob, block)
        real = mask[:, None, :, None]
        assert ((got - want).abs() * real).max() < 1e-5  # padded query rows are never read
        assert ((ctx_only - want).abs() * real).max() < 1e-5 and none_recv is None
        assert ((got_recv - want_recv).abs() * mask).max() < 1e-5


@pytest.mark.parametrize("L", [300, 517])
def test_chunked_received_attention_equals_the_full_probability_matrix(L, monkeypatch):
    """Long inputs take the sdpa + chunked path; it must give what the explicit L x L path gives."""
    g = torch.Generator().manual_seed(L)
    B, H, dh = 2, 3, 8
    q, k, v = (torch.randn(B, H, L, dh, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(L)[None] < torch.tensor([L, L // 2])[:, None]
    kernels = [lambda: dense_attention(q, k, v, mask, need_received=True),  # (B, 1, 1, L) mask
               lambda: masked_local_attention(q, k, v, mask, 16, mask & (torch.arange(L) == 0), need_received=True)]  # (B, 1, L, L)
    got = [f() for f in kernels]
    monkeypatch.setattr(kernels_module, "RECEIVED_CHUNK", 10 ** 6)  # force the explicit path as the reference
    want = [f() for f in kernels]
    for (ctx, recv, _), (ctx_ref, recv_ref, _) in zip(got, want):
        assert ((ctx - ctx_ref).abs() * mask[:, None, :, None]).max() < 1e-8
        assert ((recv - recv_ref).abs() * mask).max() < 1e-8
        assert torch.allclose(recv.sum(1), mask.sum(1).double() * H)  # each real query hands out H x 1


def test_blocked_path_inside_the_encoder_matches_masked_reference():
    ids, mask = batch(B=3, L=70)
    for pair_aware in (dict(), dict(global_sep=False), dict(global_segment="second")):
        blocked = MechanismConfig(name="sparse", sparse=SparseConfig(window=16, block_size=16, blocked_min_length=1,
                                                                     min_length=0, **pair_aware))
        masked = MechanismConfig(name="sparse", sparse=SparseConfig(window=16, **pair_aware), mode="mask")
        assert torch.allclose(run(blocked, ids, mask).logits, run(masked, ids, mask).logits, atol=1e-5)


def _differs(a, b) -> bool:
    """Clearly different logits: the random backbone's logits are ~1e-2, float noise ~1e-8."""
    return float((a - b).abs().max()) > 1e-6


def test_window_below_min_length_is_exactly_the_static_model():
    """Issue 15: below mechanism.sparse.min_length (default 512, the measured crossover) the layer runs exact
    dense attention; min_length=0 keeps the window at every length (the earlier behaviour)."""
    for pair in (True, False):
        ids, mask = batch(B=3, L=70, pair=pair)
        static = run(STATIC, ids, mask)
        assert torch.equal(run(MechanismConfig(name="sparse", sparse=SparseConfig(window=16)), ids, mask).logits,
                           static.logits)
        windowed = run(MechanismConfig(name="sparse", sparse=SparseConfig(window=16, min_length=0)), ids, mask)
        assert _differs(windowed.logits, static.logits)
        at_crossover = MechanismConfig(name="sparse", sparse=SparseConfig(window=16, min_length=70))
        assert torch.equal(run(at_crossover, ids, mask).logits, windowed.logits)  # from min_length on: the window


def test_pair_globals_change_what_a_pair_sees():
    """[SEP] global (default) and the whole second segment global each change a windowed pair's result; a
    single sentence has no [SEP] global (only [CLS]), so global_sep changes nothing for it."""
    sp = lambda **kw: MechanismConfig(name="sparse", sparse=SparseConfig(window=8, min_length=0, **kw))  # noqa
    ids, mask = batch(B=3, L=70)
    cls_only, seps, second = (run(sp(**kw), ids, mask).logits for kw in
                              (dict(global_sep=False), dict(), dict(global_segment="second")))
    assert _differs(cls_only, seps) and _differs(seps, second)
    ids, mask = batch(B=3, L=70, pair=False)
    assert torch.equal(run(sp(global_sep=False), ids, mask).logits, run(sp(), ids, mask).logits)


def _segments(ids, mask):
    """(first, second) real-token counts of each row of batch(): the first [SEP] at n // 2."""
    n = mask.sum(1)
    return n // 2 + 1, n - n // 2 - 1


def test_pair_aware_pruning_keeps_the_ratio_within_each_segment_and_every_sep():
    ids, mask = batch(B=6, L=60, seed=3)
    enc = encoder(MechanismConfig(name="prune", prune=PruneConfig(layers=[2], keep_ratios=[0.3])))
    kept = []
    orig = enc.mechanisms["prune"].after_layer

    def spy(layer, state):
        new = orig(layer, state)
        if layer in enc.mechanisms["prune"].keep:
            kept.append((new.protected.clone(), new.mask.clone()))
        return new
    enc.mechanisms["prune"].after_layer = spy
    with torch.no_grad():
        out = enc(ids, mask)
    prot, new_mask = kept[0]
    n1, n2 = _segments(ids, mask)
    from eat.model.tokens import second_segment
    sec = second_segment(prot) & new_mask
    for r in range(ids.shape[0]):
        assert int(prot[r].sum()) == 3  # [CLS] and both [SEP]s survive
        assert int((new_mask[r] & ~sec[r]).sum()) == max(-(-3 * int(n1[r]) // 10), 2)
        assert int(sec[r].sum()) == max(-(-3 * int(n2[r]) // 10), 1)
    assert torch.equal(out.tokens_kept[:, 2], new_mask.sum(1))  # what layer 3 ran on


def test_pair_aware_pruning_leaves_single_sentences_as_before_and_is_batch_invariant():
    for pair in (False, True):
        ids, mask = batch(B=5, L=48, seed=4, pair=pair)
        new = run(MechanismConfig(name="prune", prune=PruneConfig(keep_ratios=[0.5, 0.5])), ids, mask)
        old = run(MechanismConfig(name="prune", prune=PruneConfig(keep_ratios=[0.5, 0.5], segments=False)), ids, mask)
        assert torch.equal(new.logits, old.logits) != pair  # pairs: a different choice of tokens
        one = [run(MechanismConfig(name="prune", prune=PruneConfig(keep_ratios=[0.5, 0.5])), ids[r:r + 1],
                   mask[r:r + 1]) for r in range(5)]
        assert torch.allclose(torch.cat([o.logits for o in one]), new.logits, atol=1e-5)
        assert torch.equal(torch.cat([o.tokens_kept for o in one]), new.tokens_kept)


def test_exit_distillation_pulls_heads_towards_the_final_head():
    """mechanism.exit.distill=0 is the plain joint loss; with distill > 0 a head that already matches the final
    head's soft labels loses less than one that does not."""
    from eat.mechanisms.early_exit import EarlyExit
    labels = torch.tensor([0, 1, 2, 1])
    final = torch.tensor([[2.0, 0.1, 0.0], [0.0, 1.5, 0.3], [0.2, 0.1, 1.0], [1.0, 0.9, 0.0]])
    other = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    plain = EarlyExit(ExitConfig(layers=[1]), 6, 8, 3)
    kd = EarlyExit(ExitConfig(layers=[1], distill=0.5), 6, 8, 3)
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(plain.joint_loss([other], final, labels), (ce(other, labels) + ce(final, labels)) / 2)
    assert torch.allclose(kd.joint_loss([final], final, labels), (0.5 * ce(final, labels) + ce(final, labels)) / 2)
    assert kd.joint_loss([other], final, labels) > kd.joint_loss([final], final, labels)


def test_a_teacher_teaches_every_head_the_final_one_included():
    """With teacher_logits (teacher_ckpt) the soft labels are the teacher's, and the final head learns from them too:
    a final head equal to the teacher loses less than one that is not, which self-distillation cannot see."""
    from eat.mechanisms.early_exit import EarlyExit
    labels = torch.tensor([0, 1, 2, 1])
    teacher = torch.tensor([[2.0, 0.1, 0.0], [0.0, 1.5, 0.3], [0.2, 0.1, 1.0], [1.0, 0.9, 0.0]])
    other = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    kd = EarlyExit(ExitConfig(layers=[1], distill=0.5, distill_temperature=2.0), 6, 8, 3)
    ce, T = torch.nn.functional.cross_entropy, 2.0

    def kl(z):  # T^2 KL(teacher || z) at temperature T
        return T * T * torch.nn.functional.kl_div(torch.log_softmax(z / T, -1), torch.softmax(teacher / T, -1),
                                                  reduction="batchmean")
    want = ((0.5 * ce(other, labels) + 0.5 * kl(other)) + (0.5 * ce(other, labels) + 0.5 * kl(other))) / 2
    assert torch.allclose(kd.joint_loss([other], other, labels, teacher), want)
    assert kd.joint_loss([teacher], teacher, labels, teacher) < kd.joint_loss([teacher], other, labels, teacher)
    # without a teacher the final head only teaches: a head equal to it pays half its cross-entropy and no KL
    assert torch.allclose(kd.joint_loss([other], other, labels), (0.5 * ce(other, labels) + ce(other, labels)) / 2)


def test_pruning_really_shortens_the_sequence():
    ids, mask = batch(B=4, L=50)
    enc = encoder(MechanismConfig(name="prune", prune=PruneConfig(keep_ratios=[0.5, 0.5])))
    seen = []
    for layer in enc.layers:
        layer.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        out = enc(ids, mask)
    lengths = [s[1] for s in seen]
    # pruned after layers 2 and 4 (of 6): the hidden states of layers 3 and 5 are shorter
    assert lengths[0] == lengths[1] == 50 and lengths[2] == 25 and lengths[4] < lengths[2]
    assert (out.tokens_final < out.tokens_in).all()
    assert (out.flops < out.static_flops).all()


def test_mask_mode_keeps_the_length_but_prunes_the_same_tokens_count():
    ids, mask = batch(B=4, L=50)
    enc = encoder(MechanismConfig(name="prune", mode="mask", prune=PruneConfig(keep_ratios=[0.5, 0.5])))
    seen = []
    enc.layers[4].register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[1]))
    with torch.no_grad():
        out = enc(ids, mask)
    fast = run(MechanismConfig(name="prune", prune=PruneConfig(keep_ratios=[0.5, 0.5])), ids, mask)
    assert seen == [50]
    assert torch.equal(out.tokens_final, fast.tokens_final)
    assert torch.allclose(out.flops, out.static_flops, rtol=0.01)  # no compute saved


def test_protected_tokens_survive_pruning():
    """[CLS] and the first [SEP] of a pair are kept even when they score lowest; kept tokens stay in order."""
    from eat.mechanisms.pruning import TokenPruner
    from eat.model.state import Outputs, State

    ids, mask = batch(B=2, L=30)
    mask = mask.bool()
    prot = encoder(STATIC).protected_tokens(ids, mask)
    assert prot.sum(1).tolist() == [3, 3]  # [CLS] + both [SEP]s of each pair
    B, L = ids.shape
    hidden = torch.rand(B, L, 8) + 1.0
    hidden[prot] = 0.0  # the lowest L2 norm of all, apart from the position tag below
    hidden[..., 1] = torch.arange(L, dtype=torch.float)  # remember each token's position
    n1, n2 = _segments(ids, mask)
    for segments in (True, False):  # false: the earlier rule, [CLS] and the first [SEP] only
        out = Outputs(torch.zeros(B, 3), torch.full((B,), 6), mask.sum(1), torch.zeros(B, 6, dtype=torch.long),
                      torch.zeros(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64))
        pruner = TokenPruner(PruneConfig(keep_ratios=[0.2, 0.2], criterion="norm", segments=segments), num_layers=6)
        state = pruner.after_layer(1, State(hidden, mask, torch.arange(B), prot, out))
        for r in range(B):
            kept = state.hidden[r, state.mask[r], 1].long().tolist()
            must = prot[r].nonzero().squeeze(1).tolist()[:None if segments else 2]
            assert set(must) <= set(kept) and kept == sorted(kept)
            want = max(2, -(-int(n1[r]) * 2 // 10)) + max(1, -(-int(n2[r]) * 2 // 10)) if segments else \
                max(2, -(-int(mask[r].sum()) * 2 // 10))
            assert len(kept) == want
        assert state.length < L


def test_early_exit_really_drops_rows_and_keeps_order():
    ids, mask = batch(B=8, L=20)
    m = MechanismConfig(name="exit", exit=ExitConfig(criterion="patience", patience=1))
    enc = encoder(m)
    sizes = []
    for layer in enc.layers:
        layer.register_forward_pre_hook(lambda mod, args: sizes.append(args[0].shape[0]))
    with torch.no_grad():
        out = enc(ids, mask)
    assert sizes[0] == 8 and (len(sizes) < 6 or sizes[-1] < 8)  # later layers ran fewer rows (or none)
    assert out.exit_layer.min() < C.num_layers
    # each row's logits are those of the head it left through, in the original row order
    with torch.no_grad():
        for r in range(8):
            alone = enc(ids[r:r + 1, : int(mask[r].sum())], mask[r:r + 1, : int(mask[r].sum())])
            assert alone.exit_layer.item() == out.exit_layer[r].item()
            assert torch.allclose(alone.logits[0], out.logits[r], atol=1e-5)


def test_batch_level_exit_of_the_reference_waits_for_every_row():
    from eat.mechanisms.early_exit import EarlyExit
    from eat.model.state import Outputs, State

    def step(batch_level: bool, threshold: float) -> State:
        torch.manual_seed(0)
        ex = EarlyExit(ExitConfig(threshold=threshold), 6, 48, 3, batch_level=batch_level).eval()
        layer = ex.active[0]
        B, L = 8, 5
        out = Outputs(torch.zeros(B, 3), torch.full((B,), 6), torch.full((B,), L), torch.zeros(B, 6, dtype=torch.long),
                      torch.zeros(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64))
        hidden = torch.randn(B, L, 48, generator=torch.Generator().manual_seed(1)) * 20
        state = State(hidden, torch.ones(B, L, dtype=torch.bool), torch.arange(B), torch.zeros(B, L, dtype=torch.bool), out)
        with torch.no_grad():
            return ex.after_layer(layer, state)

    mixed = 0
    for t in torch.linspace(0.35, 0.95, 13).tolist():
        assert step(True, t).batch in (0, 8)  # the reference: the whole batch exits, or nobody
        mixed += 0 < step(False, t).batch < 8  # ours: each row decides for itself
    assert mixed > 0


@pytest.mark.parametrize("criterion,threshold", [("confidence", 0.334), ("entropy", 0.9999), ("patience", 0.5)])
def test_exit_criteria_fire(criterion, threshold):
    ids, mask = batch(B=6)
    out = run(MechanismConfig(name="exit", exit=ExitConfig(criterion=criterion, threshold=threshold, patience=1)),
              ids, mask)
    exited = out.exit_layer < C.num_layers
    assert exited.any()
    assert (out.flops[exited] < out.static_flops[exited]).all()
    assert (out.flops[~exited] > out.static_flops[~exited]).all()  # rows that run to the end also paid the heads


def test_from_layer_consults_no_head_before_it_and_loads_the_same_weights():
    """mechanism.exit.from_layer=k: the heads before layer k stay in the model (same state dict) but are not run:
    with a threshold every head passes, every row leaves through the head of layer k with that head's logits, and
    rows that run to the end pay for fewer heads."""
    from eat.config import ConfigError
    from eat.mechanisms.early_exit import EarlyExit

    ids, mask = batch(B=6)
    every = encoder(MechanismConfig(name="exit", exit=ExitConfig(threshold=0.334)))
    late = encoder(MechanismConfig(name="exit", exit=ExitConfig(threshold=0.334, from_layer=4)))
    assert every.state_dict().keys() == late.state_dict().keys()
    late.load_state_dict(every.state_dict())
    with torch.no_grad():
        a, b = every(ids, mask), late(ids, mask)
        every.mechanisms["exit"].collect_all = True
        heads = every(ids, mask).head_logits  # (B, C) per head, after layers 1..5
    assert (a.exit_layer == 1).all() and (b.exit_layer == 4).all()
    assert torch.allclose(b.logits, heads[3], atol=1e-6)
    never = [encoder(MechanismConfig(name="exit", exit=ExitConfig(threshold=1.0, from_layer=k))) for k in (1, 4)]
    with torch.no_grad():
        full, fewer = (e(ids, mask) for e in never)
    assert (full.exit_layer == 6).all() and (fewer.exit_layer == 6).all()
    assert (fewer.flops < full.flops).all() and torch.allclose(full.logits, fewer.logits)
    with pytest.raises(ConfigError, match=r"mechanism.exit.from_layer=6: no exit head.*allowed: 1 to 5"):
        EarlyExit(ExitConfig(from_layer=6), 6, 48, 3)
    with pytest.raises(ConfigError, match=r"mechanism.exit.from_layer.*1-based"):
        ExitConfig(from_layer=0)


def test_pair_pooling_reads_each_segment_and_exits_per_example():
    """pooling=pair: the heads read (u, v, |u - v|, u * v) of the two segments' means ([CLS] .. first [SEP], then
    the rest); a single sentence has v = 0; rows still exit one by one, as they would alone."""
    from eat.mechanisms.early_exit import pool
    ex = ExitConfig(pooling="pair", criterion="patience", patience=1)
    enc = encoder(MechanismConfig(name="exit", exit=ex))
    heads = enc.mechanisms["exit"]
    assert all(h[1].in_features == 4 * C.hidden_size for h in heads.heads.values())
    assert heads.readout(0) is None  # fused runtimes have no segment input: the head runs in torch
    for pair in (True, False):
        ids, mask = batch(B=5, L=40, seed=2, pair=pair)
        hidden = torch.randn(5, 40, C.hidden_size, generator=torch.Generator().manual_seed(1))
        f = pool(hidden, mask.bool(), "pair", enc.protected_tokens(ids, mask.bool()))
        for r, n in enumerate(mask.sum(1).tolist()):
            split = n // 2 + 1 if pair else n
            u = hidden[r, :split].mean(0)
            v = hidden[r, split:n].mean(0) if pair else torch.zeros_like(u)
            assert torch.allclose(f[r], torch.cat([u, v, (u - v).abs(), u * v]), atol=1e-6)
    ids, mask = batch(B=8, L=30, seed=5)
    with torch.no_grad():
        out = enc(ids, mask)
        assert out.exit_layer.min() < C.num_layers
        for r in range(8):
            n = int(mask[r].sum())
            alone = enc(ids[r:r + 1, :n], mask[r:r + 1, :n])
            assert alone.exit_layer.item() == out.exit_layer[r].item()
            assert torch.allclose(alone.logits[0], out.logits[r], atol=1e-5)


def test_heads_of_another_pooling_in_the_checkpoint_name_the_setting(tmp_path):
    from eat.build import load_checkpoint_weights
    from eat.config import ConfigError
    path = str(tmp_path / "mean.ckpt")
    torch.save({"state_dict": encoder(MechanismConfig(name="exit", exit=ExitConfig())).state_dict()}, path)
    with pytest.raises(ConfigError, match=r"size mismatch.*mechanism\.exit\.pooling"):
        load_checkpoint_weights(encoder(MechanismConfig(name="exit", exit=ExitConfig(pooling="pair"))), path)


@pytest.mark.parametrize("pair", [False, True])
def test_exits_re_pad_the_rows_that_stay_to_their_own_longest_row(pair):
    """Row 0 is the batch's longest; when it exits at layer 1 the later layers run at the longest remaining row's
    length (trim_padding=true), with the same logits and exit layers as keeping the padding, and fewer FLOPs."""
    runs = {}
    for trim in (True, False):
        enc = encoder(MechanismConfig(name="exit", exit=ExitConfig(trim_padding=trim)), seed=1)
        ex = enc.mechanisms["exit"]
        with torch.no_grad():
            for head in ex.heads.values():
                head[1].weight.normal_(0, 0.5)
        ids, mask = batch(B=8, L=40, seed=3, pair=pair)
        with torch.no_grad():
            ex.collect_all = True
            conf = enc(ids, mask).head_logits[0].softmax(-1).max(-1).values  # (B,) layer-1 confidence
            ex.collect_all = False
        below = conf[conf < conf[0]]
        assert 0 < len(below) < len(conf) - 1, "the check needs row 0 to exit at layer 1 and others to stay"
        ex.threshold = float(conf[0] + below.max()) / 2  # row 0 and the rows more confident exit at layer 1
        lengths = []
        hook = enc.layers[1].register_forward_pre_hook(lambda _m, a: lengths.append(a[0].shape[1]))
        with torch.no_grad():
            runs[trim] = enc(ids, mask)
        hook.remove()
        stay = conf < ex.threshold
        assert lengths == [int(mask[stay].sum(1).max()) if trim else ids.shape[1]]
    a, b = runs[True], runs[False]
    assert torch.equal(a.exit_layer, b.exit_layer) and a.exit_layer[0] == 1 and (a.exit_layer > 1).any()
    assert torch.allclose(a.logits, b.logits, atol=1e-5, rtol=0)
    later = a.exit_layer > 1
    assert (a.flops[later] < b.flops[later]).all() and torch.equal(a.flops[~later], b.flops[~later])


def test_select_rows_keeps_the_padding_when_asked_and_every_tensor_in_step():
    from eat.model.state import Outputs, State
    B, L, D = 3, 6, 4
    mask = torch.arange(L)[None] < torch.tensor([6, 2, 4])[:, None]
    hidden = torch.randn(B, L, D)
    out = Outputs(torch.zeros(B, 2), torch.zeros(B, dtype=torch.long), mask.sum(1), torch.zeros(B, 2, dtype=torch.long),
                  torch.zeros(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64))
    st = State(hidden, mask, torch.arange(B), mask.clone(), out, received=torch.rand(B, L),
               row_slots={"x.n": torch.tensor([7, 8, 9])}, token_slots={"x.size": torch.rand(B, L, 1)})
    keep = torch.tensor([False, True, True])
    for trim, n in ((True, 4), (False, 6)):
        s = st.select_rows(keep, trim=trim)
        assert s.hidden.shape == (2, n, D) and s.hidden.is_contiguous()
        assert torch.equal(s.hidden, hidden[1:, :n]) and torch.equal(s.mask, mask[1:, :n])
        assert torch.equal(s.received, st.received[1:, :n]) and torch.equal(s.token_slots["x.size"],
                                                                             st.token_slots["x.size"][1:, :n])
        assert s.rows.tolist() == [1, 2] and s.row_slots["x.n"].tolist() == [8, 9]
