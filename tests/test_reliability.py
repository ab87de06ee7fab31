"""Crash-safe sweeps, skip_completed, resume, determinism, 2-process DDP on CPU, and a parallel joblib multirun.

One tiny training run (`first_run`, in-process) is shared: it is the checkpoint that is resumed, the results
that `skip_completed` finds, the reference for the determinism check and the single-process reference for
DDP. Every job runs with threads=1 so that two parallel jobs fit on two cores and thread count cannot change
a float reduction order between the runs that are compared.
"""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from eat.results import COLUMNS, read_rows
from tests.conftest import GLUE_DIR, ROOT, TINY, compose_cfg, needs_glue, run_script

pytestmark = needs_glue

STEPS_PER_EPOCH = 6  # data.max_train_samples=48 / data.batch_size=8 (TINY)


def base(*extra: str):
    # callbacks=resumable: the shared first run is resumed below (the default keeps a weights-only best.ckpt)
    return [*TINY, "threads=1", f"data.dir={GLUE_DIR}", "callbacks=resumable", *extra]


def in_process(overrides):
    """eat.runner.run like train.py does, restoring torch's thread count afterwards."""
    from eat.runner import run

    threads = torch.get_num_threads()
    try:
        return run(compose_cfg(overrides))
    finally:
        torch.set_num_threads(threads)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def ok(p: subprocess.CompletedProcess) -> str:
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("first")
    rows = in_process(base("mechanism=none", f"output_dir={d / 'run'}", f"results_csv={d / 'results.csv'}"))
    assert len(rows) == 2
    return d


def test_skip_completed_single_run(first_run, tmp_path):
    """The same config again with skip_completed=true: a skip line, no new rows, no training."""
    before = (first_run / "results.csv").read_bytes()
    out = ok(run_script("train.py", base("mechanism=none", f"results_csv={first_run / 'results.csv'}", "skip_completed=true"), tmp_path))
    assert "[eat] skip:" in out and read_rows(str(first_run / "results.csv"))[0]["config_hash"] in out
    assert (first_run / "results.csv").read_bytes() == before
    assert not list(tmp_path.rglob("*.ckpt"))


def test_joblib_multirun_is_deterministic_and_rerun_skips(first_run, tmp_path):
    """A 2-job parallel multirun (hydra/launcher=local_parallel: joblib, n_jobs=2) over two mechanisms; its `none` job is the first run's
    config again, in another process: identical accuracy and predictions. Rerunning the sweep with
    skip_completed=true skips both jobs."""
    results = tmp_path / "results.csv"
    sweep = ["-m", "hydra/launcher=local_parallel", "mechanism=none,exit"]  # conf/hydra/launcher: joblib, n_jobs=2
    (tmp_path / "a").mkdir()
    ok(run_script("train.py", [*sweep, *base(f"results_csv={results}")], tmp_path / "a"))
    rows = read_rows(str(results))
    assert sorted((r["mechanism"], r["batch_size"]) for r in rows) == [("exit", "1"), ("exit", "8"),
                                                                         ("none", "1"), ("none", "8")]
    ref = {r["batch_size"]: r for r in read_rows(str(first_run / "results.csv"))}
    job_dirs = {r["mechanism"]: Path(r["output_dir"]) for r in rows}
    assert job_dirs["none"] != job_dirs["exit"] and all(d.parent == tmp_path / "a" / "multirun" for d in job_dirs.values())
    for r in rows:
        if r["mechanism"] == "none":  # same seed, same config: same numbers
            assert r["config_hash"] == ref[r["batch_size"]]["config_hash"]
            assert r["accuracy"] == ref[r["batch_size"]]["accuracy"]
            name = f"predictions_validation_bs{r['batch_size']}.csv"
            assert read_csv(job_dirs["none"] / name) == read_csv(first_run / "run" / name)

    (tmp_path / "b").mkdir()
    before = results.read_bytes()
    out = ok(run_script("train.py", ["-m", "mechanism=none,exit", *base(f"results_csv={results}", "skip_completed=true")],
                        tmp_path / "b"))
    assert out.count("[eat] skip:") == 2, out[-3000:]
    assert results.read_bytes() == before
    assert not list((tmp_path / "b").rglob("*.ckpt"))


def test_resume_continues_from_the_checkpoint(first_run, tmp_path):
    last = first_run / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == STEPS_PER_EPOCH
    in_process(base("mechanism=none", f"ckpt_path={last}", "trainer.max_epochs=2", f"output_dir={tmp_path / 'run'}",
                    f"results_csv={tmp_path / 'results.csv'}"))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2 * STEPS_PER_EPOCH  # one more epoch, not two from scratch
    steps = [int(r["step"]) for r in read_csv(tmp_path / "run" / "csv" / "metrics.csv") if r.get("train/loss")]
    assert steps and min(steps) >= STEPS_PER_EPOCH, steps  # the step counter continues; it did not restart at 0
    rows = read_rows(str(tmp_path / "results.csv"))
    assert len(rows) == 2 and all(r["ckpt_path"].endswith("best.ckpt") for r in rows)


def test_ddp_two_processes_on_cpu(first_run, tmp_path):
    """trainer=ddp with 2 CPU processes (gloo): fit completes, rank 0 alone evaluates and writes its rows once,
    and the training curves have the same metric keys as the single-process run."""
    results = tmp_path / "results.csv"
    p = run_script("train.py", base("mechanism=none", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
                                    f"results_csv={results}"), tmp_path, timeout=240)
    out = ok(p)
    assert "Traceback" not in out, out[-4000:]
    rows = read_rows(str(results))
    assert sorted(r["batch_size"] for r in rows) == ["1", "8"]  # written once, by rank 0
    assert all(r["n_examples"] == "24" for r in rows)  # the full eval set, not one rank's shard
    ddp_cols = read_csv(tmp_path / "hydra" / "csv" / "metrics.csv")[0].keys()
    single_cols = read_csv(first_run / "run" / "csv" / "metrics.csv")[0].keys()
    assert list(ddp_cols) == list(single_cols)
    assert any(k.startswith("test/validation/bs8/") for k in single_cols)  # every eval batch size is in the curves


def test_sigkill_leaves_results_table_parseable(first_run, tmp_path):
    """Kill a job (SIGKILL, no cleanup) while it appends rows: every row in the table is complete, the job
    counts as not completed, and the rows written before it are untouched."""
    from eat.config import to_run_config
    from eat.runner import is_completed

    results = tmp_path / "results.csv"
    results.write_bytes((first_run / "results.csv").read_bytes())  # a table with rows from an earlier job
    n0 = len(read_rows(str(results)))
    sizes = "[" + ",".join(str(b) for b in range(1, 25)) + "]"
    args = [*TINY, "threads=1", f"data.dir={GLUE_DIR}", "data.max_train_samples=16", f"eval_batch_sizes={sizes}",
            f"results_csv={results}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={tmp_path / 'hydra'}"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while len(read_rows(str(results))) < n0 + 3 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before it could be killed mid-way"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    with open(results, newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == COLUMNS
    assert all(len(r) == len(COLUMNS) for r in table[1:]), "a torn row"
    rows = read_rows(str(results))
    new = rows[n0:]
    assert 3 <= len(new) < 24, len(new)
    assert all(r["run_id"] and r["accuracy"] and r["config_hash"] == new[0]["config_hash"] for r in new)
    assert (results.read_bytes()).startswith((first_run / "results.csv").read_bytes())
    import pandas as pd

    assert len(pd.read_csv(results)) == len(rows)
    # skip_completed would run it again: some of its batch sizes have no row
    rc = to_run_config(compose_cfg(args + [f"output_dir={tmp_path / 'hydra'}"]))
    assert not is_completed(rc, new[0]["config_hash"])


@pytest.mark.parametrize("launcher, target, expect", [
    ("local_parallel", "hydra_joblib_launcher.joblib_launcher.JoblibLauncher", {"n_jobs": 2}),
    ("slurm", "hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
     {"gpus_per_node": 1, "tasks_per_node": 1, "timeout_min": 240}),
])
def test_launcher_configs_compose(launcher, target, expect):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}", "output_dir=x"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    assert {k: cfg.hydra.launcher[k] for k in expect} == expect
