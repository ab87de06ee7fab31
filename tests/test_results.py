"""The results table: atomic appends under concurrent writer processes, column checks, config hashing."""
from __future__ import annotations

import csv
import multiprocessing as mp

import pytest
from omegaconf import OmegaConf

from eat import results
from tests.conftest import TINY, compose_cfg

ROWS_PER_WRITER = 200
LONG = 3000  # characters per long field: far more than a pipe/page-sized write, with commas, quotes, newlines


def long_text(writer: int, i: int) -> str:
    unit = f'w{writer}-r{i},"q"\n'
    return (unit * (LONG // len(unit) + 1))[:LONG]


def writer_process(path: str, writer: int, start) -> None:
    start.wait()  # both writers begin together
    for i in range(ROWS_PER_WRITER):
        results.append_rows(path, [{"run_id": f"w{writer}", "seed": i, "task": "sst2",
                                    "mechanism_params": long_text(writer, i), "ckpt_path": long_text(writer, -i),
                                    "accuracy": 0.5 + i / 1000}])


def test_append_rows_concurrent_processes(tmp_path):
    path = str(tmp_path / "nested" / "results.csv")  # folder created by append_rows
    ctx = mp.get_context("fork")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=writer_process, args=(path, w, start)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]

    with open(path, newline="") as f:
        records = list(csv.reader(f))
    assert records[0] == results.COLUMNS  # one header, first
    body = records[1:]
    assert len(body) == 2 * ROWS_PER_WRITER
    assert all(len(r) == len(results.COLUMNS) for r in body)
    rows = [dict(zip(results.COLUMNS, r)) for r in body]
    for w in (0, 1):
        mine = [r for r in rows if r["run_id"] == f"w{w}"]
        assert [int(r["seed"]) for r in mine] == list(range(ROWS_PER_WRITER))  # each writer's order kept
        for r in mine:  # no torn or interleaved field
            i = int(r["seed"])
            assert r["mechanism_params"] == long_text(w, i)
            assert r["ckpt_path"] == long_text(w, -i)
            assert r["task"] == "sst2"
            assert float(r["accuracy"]) == pytest.approx(0.5 + i / 1000)
    assert results.read_rows(path) == rows


def test_append_rows_formats_and_rejects_unknown_columns(tmp_path):
    path = str(tmp_path / "results.csv")
    results.append_rows(path, [{"run_id": "a", "accuracy": 0.123456789, "f1": None, "batch_size": 8}])
    with pytest.raises(KeyError, match="not_a_column"):
        results.append_rows(path, [{"run_id": "b", "not_a_column": 1}])
    rows = results.read_rows(path)
    assert len(rows) == 1  # the bad call wrote nothing
    assert rows[0]["accuracy"] == "0.123457" and rows[0]["f1"] == "" and rows[0]["batch_size"] == "8"
    assert results.read_rows(str(tmp_path / "missing.csv")) == []


def plain_cfg(*overrides: str) -> dict:
    """The real composed config, resolved as `eat.runner.run` hashes it."""
    return OmegaConf.to_container(compose_cfg([*TINY, "mechanism=exit", *overrides]), resolve=True)


def test_config_hash_ignores_paths_but_not_thresholds():
    base = results.config_hash(plain_cfg("output_dir=/runs/a", "results_csv=/x/results.csv"))
    # Another run folder and results file: the same experiment. (The checkpoint callback's dirpath and the
    # CSV logger's save_dir are derived from output_dir and must not leak into the hash either.)
    assert results.config_hash(plain_cfg("output_dir=/runs/b/2026-01-01_00-00-00",
                                         "results_csv=/y/other.csv")) == base
    assert results.config_hash(plain_cfg("output_dir=/runs/a", "results_csv=/x/results.csv",
                                         "trainer.enable_progress_bar=true")) == base
    changed = results.config_hash(plain_cfg("output_dir=/runs/a", "results_csv=/x/results.csv",
                                            "mechanism.exit.threshold=0.8"))
    assert changed != base
    assert results.config_hash(plain_cfg("output_dir=/runs/a", "seed=7")) != base

    d = {"seed": 1, "mechanism": {"exit": {"threshold": 0.9}}, "output_dir": "/a", "results_csv": "/r.csv"}
    assert results.config_hash(d) == results.config_hash({**d, "output_dir": "/b", "results_csv": "/s.csv"})
    assert results.config_hash(d) != results.config_hash({**d, "mechanism": {"exit": {"threshold": 0.95}}})
    assert len(results.config_hash(d)) == 12
