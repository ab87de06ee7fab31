"""Shared test helpers: compose the real Hydra configs with reduced sizes, and find the real GLUE data."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
GLUE_DIR = Path(os.environ.get("EAT_TEST_GLUE_DIR", ROOT.parent / "shared" / "data" / "glue"))

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from eat.config import register_configs  # noqa: E402

register_configs()

HAVE_GLUE = (GLUE_DIR / "SST-2" / "dev.tsv").exists()
NO_GLUE_REASON = f"real GLUE data not found at {GLUE_DIR} (see README: data)"
needs_glue = pytest.mark.skipif(not HAVE_GLUE, reason=NO_GLUE_REASON)


# The tests on real data skip without the data folder. Say so loudly, at the top and at the end of the run
# (a skip count alone hides it), and refuse to run without it in CI (CI=true), which always has ../shared
# beside the clone: a silent skip there would hide breakage.
def pytest_report_header(config):
    if HAVE_GLUE:
        return f"eat: real GLUE data at {GLUE_DIR}"
    return f"eat: WARNING: real GLUE data NOT found at {GLUE_DIR}: every test marked needs_glue will be skipped"


def pytest_sessionstart(session):
    if not HAVE_GLUE and os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.exit(f"CI=true but the real GLUE data is missing: {GLUE_DIR / 'SST-2' / 'dev.tsv'} not found "
                    f"(set EAT_TEST_GLUE_DIR or put the data folder at ../shared/data/glue)", returncode=2)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if HAVE_GLUE:
        return
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and "real GLUE data not found" in str(r.longrepr[-1])]
    terminalreporter.write_sep("!", f"{len(skipped)} tests SKIPPED: real GLUE data not found at {GLUE_DIR}",
                               red=True, bold=True)

# Small, fast settings every end-to-end test starts from (model=tiny, a few batches, no progress bars).
TINY = ["model=tiny", "data.max_train_samples=48", "data.max_eval_samples=24", "data.batch_size=8",
        "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
        "trainer.num_sanity_val_steps=0", "eval_batch_sizes=[1,8]", "trainer.accelerator=cpu", "trainer.devices=1"]


def compose_cfg(overrides: List[str], config_name: str = "train"):
    """Compose the real configs (conf/) like the entry point does, without running Hydra's app."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def tiny_overrides(tmp_path: Path, *extra: str) -> List[str]:
    return [*TINY, f"data.dir={GLUE_DIR}", f"output_dir={tmp_path / 'run'}",
            f"results_csv={tmp_path / 'results.csv'}", *extra]


def run_script(script: str, args: List[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run train.py / eval.py as a user would (own process, real exit code), Hydra output under tmp_path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / script), *args, f"hydra.run.dir={tmp_path / 'hydra'}",
           f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
