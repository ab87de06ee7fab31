"""GLUE task specifications: where the text and labels are, in the hub datasets and in the GLUE TSVs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class TaskSpec:
    name: str
    hub_name: str  # config name in nyu-mll/glue
    text_keys: Tuple[str, ...]  # hub column names of the one or two text fields
    num_labels: int  # 1 = regression (STS-B)
    metrics: Tuple[str, ...]  # first one is the model-selection metric
    folder: str  # GLUE TSV folder name
    split_files: Dict[str, str]  # split -> TSV file name
    # TSV columns: by header name, or by position for header-less files (CoLA).
    tsv_text_columns: Tuple[str, ...] = ()
    tsv_label_column: str = "label"
    tsv_positions: Optional[Tuple[Tuple[int, ...], int]] = None  # ((text cols...), label col) if no header
    label_names: Tuple[str, ...] = ()  # string labels in the TSV, in label-id order; () = integer labels

    @property
    def splits(self) -> Tuple[str, ...]:
        # `selection` is carved from the training data (eat.data.glue.split_selection), not read from a file.
        return (*self.split_files, "selection")

    @property
    def eval_splits(self) -> Tuple[str, ...]:
        return tuple(s for s in self.split_files if s.startswith("validation"))

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


TASKS: Dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec("cola", "cola", ("sentence",), 2, ("mcc", "accuracy"), "CoLA",
                 {"train": "train.tsv", "validation": "dev.tsv"}, tsv_positions=((3,), 1)),
        TaskSpec("sst2", "sst2", ("sentence",), 2, ("accuracy",), "SST-2",
                 {"train": "train.tsv", "validation": "dev.tsv"}, tsv_text_columns=("sentence",)),
        TaskSpec("mrpc", "mrpc", ("sentence1", "sentence2"), 2, ("accuracy", "f1"), "MRPC",
                 {"train": "train.tsv", "validation": "dev.tsv"},
                 tsv_text_columns=("#1 String", "#2 String"), tsv_label_column="Quality"),
        TaskSpec("qqp", "qqp", ("question1", "question2"), 2, ("accuracy", "f1"), "QQP",
                 {"train": "train.tsv", "validation": "dev.tsv"},
                 tsv_text_columns=("question1", "question2"), tsv_label_column="is_duplicate"),
        TaskSpec("stsb", "stsb", ("sentence1", "sentence2"), 1, ("pearson", "spearman"), "STS-B",
                 {"train": "train.tsv", "validation": "dev.tsv"},
                 tsv_text_columns=("sentence1", "sentence2"), tsv_label_column="score"),
        TaskSpec("mnli", "mnli", ("premise", "hypothesis"), 3, ("accuracy",), "MNLI",
                 {"train": "train.tsv", "validation_matched": "dev_matched.tsv",
                  "validation_mismatched": "dev_mismatched.tsv"},
                 tsv_text_columns=("sentence1", "sentence2"), tsv_label_column="gold_label",
                 label_names=("entailment", "neutral", "contradiction")),
        TaskSpec("qnli", "qnli", ("question", "sentence"), 2, ("accuracy",), "QNLI",
                 {"train": "train.tsv", "validation": "dev.tsv"},
                 tsv_text_columns=("question", "sentence"), label_names=("entailment", "not_entailment")),
        TaskSpec("rte", "rte", ("sentence1", "sentence2"), 2, ("accuracy",), "RTE",
                 {"train": "train.tsv", "validation": "dev.tsv"},
                 tsv_text_columns=("sentence1", "sentence2"), label_names=("entailment", "not_entailment")),
        TaskSpec("wnli", "wnli", ("sentence1", "sentence2"), 2, ("accuracy",), "WNLI",
                 {"train": "train.tsv", "validation": "dev.tsv"}, tsv_text_columns=("sentence1", "sentence2")),
    ]
}

# Protocols for machines that have a task's dev files but not its official train split (conf/experiment/).
OFFLINE_PROTOCOLS: Dict[str, str] = {
    "mnli": "experiment=mnli_offline (trains on dev_mismatched.tsv, evaluates on dev_matched.tsv)",
    "qqp": "experiment=qqp_offline (trains on rows 0:30000 of dev.tsv, evaluates on the rest)",
}


def missing_file_hint(spec: TaskSpec, split: str) -> str:
    """What to do when a split's file is missing: the task's offline protocol if it has one, else where the
    GLUE files go."""
    need = f"task {spec.name} needs {spec.folder}/{spec.split_files.get(split, 'train.tsv')} for split {split!r}"
    if split in ("train", "selection") and spec.name in OFFLINE_PROTOCOLS:
        return f"{need}; without the official train split use the offline protocol {OFFLINE_PROTOCOLS[spec.name]}"
    return (f"{need}; put the GLUE files at data.dir/{spec.folder}/ (README: Data), or set "
            f"data.split_files.{'train' if split == 'selection' else split}=FILE")

