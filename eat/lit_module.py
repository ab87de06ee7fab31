"""LightningModule: the encoder (with its mechanisms), losses, GLUE metrics, optimiser."""
from __future__ import annotations

from typing import Dict, List, Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryF1Score, MatthewsCorrCoef, MulticlassAccuracy
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from eat.config import ConfigError, OptimConfig
from eat.data.tasks import TaskSpec
from eat.model.encoder import Encoder
from eat.model.state import Outputs
from eat.results import PREDICTION_FIELDS



def task_metrics(spec: TaskSpec) -> MetricCollection:
    make = {
        "accuracy": lambda: MulticlassAccuracy(num_classes=max(spec.num_labels, 2), average="micro"),
        "f1": lambda: BinaryF1Score(),
        "mcc": lambda: MatthewsCorrCoef(task="binary"),
        "pearson": lambda: PearsonCorrCoef(),
        "spearman": lambda: SpearmanCorrCoef(),
    }
    return MetricCollection({name: make[name]() for name in spec.metrics})


class EATModule(pl.LightningModule):
    def __init__(self, encoder: Encoder, spec: TaskSpec, optim: OptimConfig, eval_splits: List[str],
                 config_blocks: Optional[Dict] = None):
        super().__init__()
        self.encoder, self.spec, self.optim, self.eval_splits = encoder, spec, optim, list(eval_splits)
        # The resolved model/task/mechanism configs, saved in every checkpoint (eat.ckpt_config): eval.py
        # rebuilds the right model from the checkpoint alone.
        self.config_blocks = config_blocks
        # One metric collection per eval split (MNLI matched / mismatched never share state).
        self.val_metrics = nn.ModuleList(task_metrics(spec) for _ in eval_splits)
        self.test_metrics = nn.ModuleList(task_metrics(spec) for _ in eval_splits)
        self.test_records: Dict[int, List[Dict[str, Tensor]]] = {}
        self.teacher: Optional[Encoder] = None  # set_teacher: soft labels while training

    def set_teacher(self, teacher: Encoder) -> None:
        """A frozen model whose logits every exit head (the final one included) learns from (teacher_ckpt). Kept out
        of the module tree on purpose: it is neither trained nor saved in this model's checkpoints."""
        object.__setattr__(self, "teacher", teacher.eval().requires_grad_(False))

    def forward(self, batch: Dict[str, Tensor]) -> Outputs:
        return self.encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

    def predictions(self, logits: Tensor) -> Tensor:
        return logits.squeeze(-1) if self.spec.is_regression else logits.argmax(-1)

    def loss(self, out: Outputs, labels: Tensor, teacher_logits: Optional[Tensor] = None) -> Tensor:
        if self.spec.is_regression:
            return F.mse_loss(out.logits.squeeze(-1), labels)
        for m in self.encoder.mechanisms.values():  # a mechanism may own the loss (early exit: every head's)
            loss = m.training_loss(out, labels, teacher_logits)
            if loss is not None:
                return loss
        return F.cross_entropy(out.logits, labels)

    # -- steps
    def training_step(self, batch: Dict[str, Tensor], batch_idx: int) -> Tensor:
        teacher_logits = None
        if self.teacher is not None:
            with torch.no_grad():
                t = self.teacher.to(batch["input_ids"].device)
                teacher_logits = t(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")).logits
        loss = self.loss(self(batch), batch["labels"], teacher_logits)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["labels"].shape[0])
        return loss

    def validation_step(self, batch: Dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        out = self(batch)
        self.val_metrics[dataloader_idx].update(self.predictions(out.logits), batch["labels"])

    def on_validation_epoch_end(self) -> None:
        for i, (split, metrics) in enumerate(zip(self.eval_splits, self.val_metrics)):
            values = metrics.compute()
            metrics.reset()
            for name, v in values.items():
                self.log(f"val/{split}/{name}", v, sync_dist=True)
            if i == 0:  # the model-selection score: first metric of the first eval split
                self.log("val/score", values[self.spec.metrics[0]], prog_bar=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: Dict) -> None:
        if self.config_blocks:
            from eat.ckpt_config import KEY

            checkpoint[KEY] = self.config_blocks

    def on_test_epoch_start(self) -> None:
        self.test_records = {}

    def test_step(self, batch: Dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        out = self(batch)
        pred = self.predictions(out.logits)
        self.test_metrics[dataloader_idx].update(pred, batch["labels"])
        self.test_records.setdefault(dataloader_idx, []).append({
            "idx": batch["idx"], "label": batch["labels"], "pred": pred, "exit_layer": out.exit_layer,
            "tokens_in": out.tokens_in, "tokens_final": out.tokens_final,
            "gflops": out.flops / 1e9, "gflops_static": out.static_flops / 1e9})

    def test_results(self) -> Dict[str, Dict]:
        """Per eval split: metric values and per-example records (lists), after `trainer.test`."""
        results = {}
        for i, split in enumerate(self.eval_splits):
            values = {k: float(v) for k, v in self.test_metrics[i].compute().items()}
            self.test_metrics[i].reset()
            recs = self.test_records.get(i, [])
            cols = {f: torch.cat([r[f].detach().cpu() for r in recs]).tolist() if recs else [] for f in PREDICTION_FIELDS}
            results[split] = {"metrics": values, "records": cols}
        return results

    # -- optimisation
    def configure_optimizers(self):
        o = self.optim
        groups: Dict[tuple, List[nn.Parameter]] = {}  # (weight decay, lr) -> parameters
        for name, p in self.named_parameters():
            if o.trainable is not None and not name.startswith(tuple(o.trainable)):
                p.requires_grad_(False)  # frozen (two-stage training of exit heads)
                continue
            wd = 0.0 if p.ndim < 2 or "norm" in name else o.weight_decay
            lr = o.mechanism_lr if o.mechanism_lr is not None and name.startswith("encoder.mechanisms.") else o.lr
            groups.setdefault((wd, lr), []).append(p)
        if not groups:
            raise ConfigError(f"optim.trainable={o.trainable} matches no parameter of the model")
        opt = torch.optim.AdamW([{"params": ps, "weight_decay": wd, "lr": lr} for (wd, lr), ps in groups.items()],
                                lr=o.lr, betas=tuple(o.betas), eps=o.eps)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(o.warmup_ratio * total)

        def linear(step: int) -> float:  # linear warmup, then linear decay to 0
            if step < warmup:
                return (step + 1) / max(1, warmup)
            return max(0.0, (total - step) / max(1, total - warmup))

        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, linear),
                                                   "interval": "step"}}
