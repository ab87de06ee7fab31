"""Every task config composes, and its metrics are right on a hand-computed toy batch."""
from __future__ import annotations

import math

import pytest
import torch

from eat.config import to_run_config
from eat.data.tasks import TASKS
from eat.lit_module import task_metrics
from tests.conftest import compose_cfg

# labels, predictions: 6 examples, 4 right (accuracy 2/3). Binary: TP=2, FP=1, FN=1, TN=2.
LABELS = [1, 1, 1, 0, 0, 0]
PREDS = [1, 1, 0, 1, 0, 0]
F1 = 2 * 2 / (2 * 2 + 1 + 1)  # 2TP / (2TP + FP + FN) = 2/3
MCC = (2 * 2 - 1 * 1) / math.sqrt((2 + 1) * (2 + 1) * (2 + 1) * (2 + 1))  # (TP TN - FP FN) / sqrt(...) = 1/3


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_config_composes_with_its_metrics(tmp_path, task):
    rc = to_run_config(compose_cfg([f"task={task}", f"output_dir={tmp_path}"]))
    spec = TASKS[rc.task.name]
    assert rc.task.name == task
    metrics = task_metrics(spec)
    if spec.is_regression:
        y = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
        p = torch.tensor([0.0, 2.0, 1.0, 3.0, 5.0])  # ranks differ by one swap
        out = {k: float(v) for k, v in metrics(p, y).items()}
        xm, ym = p.mean(), y.mean()
        pearson = float(((p - xm) * (y - ym)).sum() / ((p - xm).pow(2).sum().sqrt() * (y - ym).pow(2).sum().sqrt()))
        assert out["pearson"] == pytest.approx(pearson, abs=1e-6)
        assert out["spearman"] == pytest.approx(1 - 6 * 2 / (5 * 24), abs=1e-6)  # 1 - 6 sum d^2 / n(n^2-1)
        return
    out = {k: float(v) for k, v in metrics(torch.tensor(PREDS), torch.tensor(LABELS)).items()}
    assert set(out) == set(spec.metrics)
    if "accuracy" in out:
        assert out["accuracy"] == pytest.approx(4 / 6)
    if "f1" in out:
        assert out["f1"] == pytest.approx(F1)
    if "mcc" in out:
        assert out["mcc"] == pytest.approx(MCC)


def test_mnli_has_two_eval_splits_with_separate_metrics():
    spec = TASKS["mnli"]
    assert spec.eval_splits == ("validation_matched", "validation_mismatched")
    assert spec.num_labels == 3 and spec.label_names == ("entailment", "neutral", "contradiction")
