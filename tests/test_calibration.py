"""Temperature scaling of the exit heads: the fit recovers a known temperature, the fitted temperatures are
the ones the exits then use, and the runner fits and records them."""
from __future__ import annotations

import json

import pytest
import torch

from eat.calibration import calibrate_exits, exit_head_logits, fit_temperature
from eat.config import ConfigError, ExitConfig, MechanismConfig
from eat.runner import run
from tests.conftest import compose_cfg, needs_glue, tiny_overrides
from tests.test_mechanisms import batch, encoder


def test_fit_recovers_the_temperature_of_overconfident_logits():
    g = torch.Generator().manual_seed(0)
    true_logits = 2.0 * torch.randn(20000, 3, generator=g)
    labels = torch.multinomial(true_logits.softmax(-1), 1, generator=g).squeeze(1)  # calibrated by construction
    for scale in (0.5, 2.5):  # under- and overconfident versions of the same logits
        assert fit_temperature(scale * true_logits, labels) == pytest.approx(scale, rel=0.05)


def test_exits_use_the_fitted_temperatures():
    mech = MechanismConfig(name="exit", exit=ExitConfig(threshold=0.8))
    enc = encoder(mech, seed=1)
    torch.manual_seed(0)
    for head in enc.mechanisms["exit"].heads.values():  # confident random heads (the default init is ~uniform)
        torch.nn.init.normal_(head[1].weight, std=1.0)
    batches = [dict(zip(("input_ids", "attention_mask"), batch(B=8, seed=s))) for s in range(6)]
    # Labels the heads can partly predict: layer 3's own predictions, every fourth one changed.
    raw, _ = exit_head_logits(enc, [{**b, "labels": torch.zeros(8, dtype=torch.long)} for b in batches])
    labels = raw[2].argmax(-1)
    labels[::4] = (labels[::4] + 1) % 3
    for i, b in enumerate(batches):
        b["labels"] = labels[8 * i:8 * i + 8]

    fitted = calibrate_exits(enc, batches)
    exit_ = enc.mechanisms["exit"]
    assert sorted(fitted) == [i + 1 for i in exit_.active] and all(t > 0 for t in fitted.values())
    assert not exit_.collect_all and not enc.training  # calibration leaves inference mode as it found it
    assert exit_.temperature.tolist() == pytest.approx([fitted[i + 1] for i in exit_.layers])

    # Each row leaves at the first layer whose calibrated confidence reaches the threshold.
    raw, _ = exit_head_logits(enc, batches)  # uncalibrated, whatever the buffers hold
    want = torch.full((48,), enc.c.num_layers)
    for layer in reversed(exit_.active):
        conf = (raw[layer] / fitted[layer + 1]).softmax(-1).max(-1).values
        want = torch.where(conf >= 0.8, layer + 1, want)
    uncalibrated = torch.full((48,), enc.c.num_layers)
    for layer in reversed(exit_.active):
        uncalibrated = torch.where(raw[layer].softmax(-1).max(-1).values >= 0.8, layer + 1, uncalibrated)
    assert not torch.equal(want, uncalibrated)  # the temperatures matter for this batch
    with torch.no_grad():
        got = torch.cat([enc(b["input_ids"], b["attention_mask"]).exit_layer for b in batches])
    assert torch.equal(got, want)


def test_calibration_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="calibration_split.*patience"):
        ExitConfig(criterion="patience", calibration_split="train")
    with pytest.raises(ConfigError, match="calibration_examples"):
        ExitConfig(calibration_examples=0)


@needs_glue
def test_unknown_calibration_split_lists_the_allowed_ones(tmp_path):
    from eat.config import to_run_config

    cfg = compose_cfg(tiny_overrides(tmp_path, "mechanism=exit", "mechanism.exit.calibration_split=dev"))
    with pytest.raises(ConfigError, match=r"mechanism.exit.calibration_split.*'dev'.*train.*validation"):
        to_run_config(cfg)


@needs_glue
def test_runner_fits_and_records_temperatures(tmp_path):
    cfg = compose_cfg(tiny_overrides(tmp_path, "mechanism=exit", "mechanism.exit.calibration_split=train",
                                     "mechanism.exit.calibration_examples=16", "eval_batch_sizes=[4]"))
    rows = run(cfg)
    temps = json.loads(rows[0]["mechanism_params"])["exit"]["temperatures"]
    assert len(temps) == 3 and all(t > 0 for t in temps) and temps != [1.0, 1.0, 1.0]  # model=tiny: 4 layers
