"""`LatencyCallback` inside a real Lightning `Trainer.test` on CPU, and its `percentile` helper."""
from __future__ import annotations

import csv
import statistics
import time

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from eat.callbacks.latency import LatencyCallback, percentile
from eat.model.encoder import Encoder, EncoderConfig

CSV_COLUMNS = ["dataloader_idx", "batch_idx", "batch_size", "tokens", "padded_length", "ms", "warmup"]
SLEEP_MS = 3.0


def dataset(n: int, seed: int = 0):
    """n tokenised rows of varying real length (dicts, as the GLUE datamodule yields them)."""
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(200, 1000, (int(torch.randint(3, 20, (1,), generator=g)),), generator=g),
             "idx": i} for i in range(n)]


def collate(rows):
    L = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), L, dtype=torch.long)
    mask = torch.zeros(len(rows), L, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r["input_ids"])] = r["input_ids"]
        mask[i, :len(r["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "idx": torch.tensor([r["idx"] for r in rows])}


class TinyModule(pl.LightningModule):
    """A tiny eat Encoder; each test step also sleeps SLEEP_MS, so the timed interval has a known floor."""

    def __init__(self):
        super().__init__()
        self.encoder = Encoder(EncoderConfig(vocab_size=1000, hidden_size=32, num_layers=2, num_heads=2,
                                             intermediate_size=64))

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        out = self.encoder(batch["input_ids"], batch["attention_mask"])
        time.sleep(SLEEP_MS / 1e3)
        return out.logits


def run_test(callback, loaders):
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[callback], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.test(TinyModule(), dataloaders=loaders, verbose=False)


def test_percentile():
    assert percentile([5.0], 50) == 5.0
    assert percentile([5.0], 99) == 5.0
    v = [4.0, 1.0, 3.0, 2.0]  # unsorted input; sorted 1 2 3 4
    assert percentile(v, 0) == 1.0
    assert percentile(v, 100) == 4.0
    assert percentile(v, 50) == pytest.approx(2.5)
    assert percentile(v, 90) == pytest.approx(3.7)  # pos = 3 * 0.9 = 2.7 -> 3 + 0.7 * (4 - 3)
    assert v == [4.0, 1.0, 3.0, 2.0]  # input not mutated
    data = torch.rand(101, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for q in (0, 10, 25, 50, 75, 90, 99, 100):  # same definition as torch.quantile (linear)
        assert percentile(data.tolist(), q) == pytest.approx(torch.quantile(data, q / 100).item())
    data = data.tolist()
    assert percentile(data, 50) == pytest.approx(statistics.median(data))


def test_latency_callback_in_trainer_test(tmp_path):
    n, bs, warmup = 26, 4, 2  # 7 batches: six of 4, the last of 2
    cb = LatencyCallback(warmup_batches=warmup)
    data = dataset(n)
    run_test(cb, DataLoader(data, batch_size=bs, collate_fn=collate))

    assert len(cb.rows) == 7
    assert [r["batch_idx"] for r in cb.rows] == list(range(7))
    assert [r["warmup"] for r in cb.rows] == [True, True] + [False] * 5
    assert [r["batch_size"] for r in cb.rows] == [4] * 6 + [2]
    assert all(r["dataloader_idx"] == 0 for r in cb.rows)
    assert all(r["ms"] >= SLEEP_MS for r in cb.rows)  # the clock brackets the whole test_step
    for r, start in zip(cb.rows, range(0, n, bs)):
        batch = collate(data[start:start + bs])
        assert r["tokens"] == int(batch["attention_mask"].sum())
        assert r["padded_length"] == batch["input_ids"].shape[1]

    s = cb.summary()
    timed = [r["ms"] for r in cb.rows[warmup:]]
    assert s["timed_batches"] == 5
    assert s["timed_examples"] == n - warmup * bs == 18
    assert s["latency_ms_p50"] <= s["latency_ms_p90"] <= s["latency_ms_p99"]
    assert min(timed) <= s["latency_ms_p50"] and s["latency_ms_p99"] <= max(timed)
    assert s["latency_ms_mean"] == pytest.approx(statistics.fmean(timed))
    assert s["latency_ms_p50"] == pytest.approx(statistics.median(timed))
    assert s["latency_ms_per_example"] == pytest.approx(sum(timed) / 18)
    # throughput is examples over total timed seconds, i.e. consistent with the mean batch latency
    assert s["throughput_eps"] == pytest.approx(18 / (s["latency_ms_mean"] * s["timed_batches"] / 1e3))
    assert s["throughput_eps"] == pytest.approx(1e3 / s["latency_ms_per_example"])
    assert cb.summary(dataloader_idx=1) == {}

    path = tmp_path / "sub" / "latency_batches.csv"
    cb.write_csv(str(path))
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == CSV_COLUMNS
    assert len(rows) == 7
    assert [r["warmup"] for r in rows] == ["True", "True"] + ["False"] * 5
    assert [float(r["ms"]) for r in rows] == pytest.approx([r["ms"] for r in cb.rows])

    # A second evaluation with the same callback (the runner's next batch size) starts from scratch.
    run_test(cb, DataLoader(data, batch_size=13, collate_fn=collate))
    assert [r["batch_size"] for r in cb.rows] == [13, 13]
    assert cb.summary() == {}  # both batches were warmup


def test_warmup_counts_per_dataloader():
    """Two eval splits (e.g. MNLI matched / mismatched): each dataloader has its own warmup and summary."""
    cb = LatencyCallback(warmup_batches=1)
    loaders = [DataLoader(dataset(12, seed=1), batch_size=4, collate_fn=collate),
               DataLoader(dataset(10, seed=2), batch_size=5, collate_fn=collate)]
    run_test(cb, loaders)
    by_dl = {i: [r for r in cb.rows if r["dataloader_idx"] == i] for i in (0, 1)}
    assert [r["warmup"] for r in by_dl[0]] == [True, False, False]
    assert [r["warmup"] for r in by_dl[1]] == [True, False]
    assert cb.summary(0)["timed_examples"] == 8
    assert cb.summary(1)["timed_examples"] == 5
    assert cb.summary(1)["timed_batches"] == 1
