"""Token merging (eat/mechanisms/merge.py): neutral settings are the static model, the kept tokens are pruning's,
what is folded in is conserved, rows are merged the same at any batch size, and it composes with every mechanism."""
from __future__ import annotations

import itertools

import pytest
import torch

from eat.config import ConfigError, ExitConfig, MechanismConfig, PruneConfig, SparseConfig, to_run_config
from eat.mechanisms.merge import MergeConfig, TokenMerger
from eat.model.state import Outputs, State
from eat.model.tokens import second_segment
from tests.conftest import compose_cfg, needs_glue, tiny_overrides
from tests.test_mechanisms import STATIC, C, batch, run

NEUTRAL = {"prune": PruneConfig(keep_ratios=[1.0, 1.0]), "sparse": SparseConfig(window=128),
           "exit": ExitConfig(criterion="entropy", threshold=0.0)}


@pytest.mark.parametrize("criterion", ["attention", "norm"])
def test_neutral_merging_equals_static(criterion):
    ids, mask = batch()
    got = run(MechanismConfig(merge=MergeConfig(keep_ratios=[1.0, 1.0], criterion=criterion)), ids, mask)
    want = run(STATIC, ids, mask)
    assert torch.allclose(got.logits, want.logits, atol=1e-5)
    assert torch.equal(got.tokens_final, want.tokens_in)


@pytest.mark.parametrize("pair", [False, True])
def test_merging_keeps_as_many_tokens_as_pruning_but_not_the_same_result(pair):
    ids, mask = batch(B=6, L=48, pair=pair)
    merged = run(MechanismConfig(merge=MergeConfig(keep_ratios=[0.5, 0.5])), ids, mask)
    pruned = run(MechanismConfig(prune=PruneConfig(keep_ratios=[0.5, 0.5])), ids, mask)
    assert torch.equal(merged.tokens_kept, pruned.tokens_kept)  # equal token retention, layer by layer
    assert (merged.tokens_final < merged.tokens_in).all()
    assert not torch.allclose(merged.logits, pruned.logits, atol=1e-4)  # the folded tokens still count
    assert (merged.flops > pruned.flops).all()  # the similarity matmul is counted


def merge_once(hidden, mask, protected, ratio, segments=True):
    B, L, _ = hidden.shape
    out = Outputs(torch.zeros(B, 2), torch.zeros(B, dtype=torch.long), mask.sum(1), torch.zeros(B, 6, dtype=torch.long),
                  torch.zeros(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64))
    m = TokenMerger(MergeConfig(layers=[2], keep_ratios=[ratio], criterion="norm", segments=segments), 6)
    state = State(hidden, mask, torch.arange(B), protected, out)
    return m.after_layer(1, state), out


def test_every_folded_token_is_conserved_in_a_size_weighted_mean():
    g = torch.Generator().manual_seed(0)
    B, L, D = 3, 11, 8
    hidden = torch.randn(B, L, D, generator=g, dtype=torch.float64)
    mask = torch.arange(L)[None] < torch.tensor([11, 7, 4])[:, None]
    protected = torch.zeros(B, L, dtype=torch.bool)
    protected[:, 0] = True
    state, out = merge_once(hidden, mask, protected, 0.4)
    size = state.token_slots["merge.size"] * state.mask
    assert size.sum(1).tolist() == mask.sum(1).tolist()  # every real token is in exactly one kept token
    total = (state.hidden * size[..., None]).sum(1)
    assert torch.allclose(total, (hidden * mask[..., None]).sum(1))  # the mass of the row is conserved
    assert torch.equal(state.mask.sum(1), torch.ceil(0.4 * mask.sum(1).double() - 1e-6).long())
    assert (out.flops > 0).all()
    again, _ = merge_once(state.hidden, state.mask, state.protected & state.mask, 0.5)  # a second merge
    assert torch.equal(again.mask.sum(1), torch.ceil(0.5 * state.mask.sum(1).double() - 1e-6).long())


def test_pairs_merge_within_each_sentence():
    ids, mask = batch(B=4, L=30, pair=True)
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(*ids.shape, 8, generator=g, dtype=torch.float64)
    m = mask.bool()
    sep = ids.eq(3) & m
    protected = sep.clone()
    protected[:, 0] = True
    second = second_segment(protected) & m
    state, _ = merge_once(hidden, m, protected, 0.3)
    size = state.token_slots["merge.size"] * state.mask
    kept_second = second_segment(state.protected) & state.mask
    assert (size * kept_second).sum(1).tolist() == second.sum(1).tolist()
    assert (size * (state.mask & ~kept_second)).sum(1).tolist() == (m & ~second).sum(1).tolist()
    assert torch.equal(state.protected.sum(1), protected.sum(1))  # [CLS] and every [SEP] stay


def test_mask_mode_keeps_the_length_and_merges_the_same_tokens():
    ids, mask = batch(B=4, L=40)
    fast = run(MechanismConfig(merge=MergeConfig(keep_ratios=[0.5, 0.5])), ids, mask)
    ref = run(MechanismConfig(mode="mask", merge=MergeConfig(keep_ratios=[0.5, 0.5])), ids, mask)
    assert torch.equal(fast.tokens_kept, ref.tokens_kept)
    assert torch.allclose(fast.logits, ref.logits, atol=1e-4)
    assert (ref.flops > fast.flops).all()  # the reference pays for the full length


def test_a_row_is_merged_the_same_alone_and_in_a_padded_batch_of_64():
    ids, mask = batch(B=8, L=48, seed=3, pair=True)
    mech = MechanismConfig(merge=MergeConfig(keep_ratios=[0.6, 0.5]), exit=ExitConfig(criterion="patience", patience=1))
    big = run(mech, ids.repeat(8, 1), mask.repeat(8, 1))  # 64 rows, padded to the longest
    for r in range(ids.shape[0]):
        n = int(mask[r].sum())
        one = run(mech, ids[r:r + 1, :n], mask[r:r + 1, :n])  # alone, no padding at all
        assert torch.equal(one.exit_layer, big.exit_layer[r:r + 1])
        assert torch.equal(one.tokens_kept, big.tokens_kept[r:r + 1])
        assert torch.equal(one.logits.argmax(-1), big.logits[r:r + 1].argmax(-1))
        assert torch.allclose(one.logits, big.logits[r:r + 1], atol=1e-4)


PARTS = ["prune", "sparse", "exit"]


@pytest.mark.parametrize("others", [c for k in range(4) for c in itertools.combinations(PARTS, k)])
def test_merge_runs_in_every_combination_and_neutral_merge_changes_nothing(others):
    ids, mask = batch(B=4, L=40)
    blocks = {p: NEUTRAL[p] for p in others}
    active = MechanismConfig(**blocks, merge=MergeConfig(keep_ratios=[0.6, 0.6]))
    assert active.name == "+".join(["prune"] * ("prune" in others) + ["merge"] + [p for p in PARTS[1:] if p in others])
    out = run(active, ids, mask)
    assert (out.tokens_final < out.tokens_in).all()
    neutral = run(MechanismConfig(**blocks, merge=MergeConfig(keep_ratios=[1.0, 1.0])), ids, mask)
    assert torch.allclose(neutral.logits, run(MechanismConfig(**blocks), ids, mask).logits, atol=1e-5)


def test_composed_from_the_config_group_and_checked(tmp_path):
    for choice, name in [("[prune,merge]", "prune+merge"), ("[merge,sparse,exit]", "merge+sparse+exit"),
                         ("merge", "merge")]:
        rc = to_run_config(compose_cfg(tiny_overrides(tmp_path, f"mechanism={choice}", "logger=none")))
        assert rc.mechanism.name == name and rc.mechanism.merge == MergeConfig()
    with pytest.raises(ConfigError, match=r"mechanism.merge.keep_ratios=\[0.5\] is not valid: needs one ratio per "
                                          r"merging layer"):
        to_run_config(compose_cfg(tiny_overrides(tmp_path, "mechanism=merge", "mechanism.merge.keep_ratios=[0.5]")))
    with pytest.raises(ConfigError, match=r"mechanism.merge.criterion='x' is not valid; allowed values: attention, norm"):
        to_run_config(compose_cfg(tiny_overrides(tmp_path, "mechanism=merge", "mechanism.merge.criterion=x")))


@needs_glue
def test_merge_with_exits_in_the_real_loop_is_batch_invariant(tmp_path):
    """Train model=tiny with mechanism=[merge,exit] through Lightning, evaluate at bs 1 and 64: same prediction,
    exit layer and kept tokens for every example."""
    import csv

    from eat.runner import run as run_job

    run_job(compose_cfg(tiny_overrides(tmp_path, "mechanism=[merge,exit]", "mechanism.exit.criterion=patience",
                                       "mechanism.exit.patience=1", "eval_batch_sizes=[1,64]",
                                       "data.max_eval_samples=64", "logger=none")))
    rows = [list(csv.DictReader(open(tmp_path / "run" / f"predictions_validation_bs{bs}.csv"))) for bs in (1, 64)]
    key = lambda r: (r["idx"], r["pred"], r["exit_layer"], r["tokens_in"], r["tokens_final"])  # noqa: E731
    assert [key(r) for r in rows[0]] == [key(r) for r in rows[1]] and len(rows[0]) == 64
    assert any(int(r["tokens_final"]) < int(r["tokens_in"]) for r in rows[0])
