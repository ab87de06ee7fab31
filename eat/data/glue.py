"""GLUE LightningDataModule: read splits, tokenise with the model's fast tokenizer, pad per batch."""
from __future__ import annotations

import random
from typing import Dict, Iterator, List, Optional

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from eat.config import ConfigError, DataConfig, TaskConfig
from eat.data.sources import Columns, DataError, check_sources, load_split, slice_columns  # noqa: F401
from eat.data.tasks import TASKS, TaskSpec


SELECTION = "selection"  # the held-out split that operating points are chosen on (DataConfig.selection_examples)


SELECTION_FIELDS = ("selection_examples", "selection_seed", "selection_unit")  # what decides the selection split


def selection_record(data: DataConfig) -> Dict[str, object]:
    """The settings that decide the selection split: a checkpoint stores them (eat.runner), so a later run that
    reads training or selection rows can check it carves the same split (check_selection)."""
    return {f: getattr(data, f) for f in SELECTION_FIELDS}


def check_selection(data: DataConfig, saved: Dict[str, object], path: str) -> None:
    here = selection_record(data)
    for f in SELECTION_FIELDS:
        if f in saved and saved[f] != here[f]:
            raise ConfigError(f"data.{f}={here[f]!r} does not match the checkpoint {path}, trained with data.{f}="
                              f"{saved[f]!r}: this run's selection split would hold rows that model trained on (or "
                              f"train on its selection rows); add data.{f}={saved[f]}")


def _words(text: str) -> tuple:
    return tuple(text.split())


def _spans(words: tuple):
    """Every contiguous word span of a text, the whole text included."""
    n = len(words)
    return (words[a:b] for a in range(n) for b in range(a + 1, n + 1))


def whole_sentences(texts: List[str]) -> List[int]:
    """Rows whose text is no other row's phrase (not a contiguous word span of a longer row): in SST-2's training
    file, whose rows are the sentences of the treebank's train part and the phrases of their parse trees, these
    are the whole sentences. One row per distinct text (its first), in file order."""
    first: Dict[tuple, int] = {}
    for i, t in enumerate(texts):
        first.setdefault(_words(t), i)
    inner = {sp for w in first for sp in _spans(w) if len(sp) < len(w) and sp in first}
    return sorted(i for w, i in first.items() if w not in inner)


def split_selection(train: Columns, n: int, seed: int, where: str, unit: str = "row") -> Dict[str, Columns]:
    """Carve `n` examples out of the training columns: {"train": the rest, "selection": the n rows}.

    unit="row": any `n` rows. unit="sentence": `n` whole sentences (whole_sentences), and every training row that
    is a phrase of one of them leaves training too, so the model has seen no part of a selection sentence.
    The rows are drawn with their own seed, so the split depends only on the training file, `n`, `seed` and `unit`.
    Both parts keep file order and the file's row numbers in `idx`, so disjointness can be checked by idx.
    """
    total = len(train["label"])
    if n == 0:
        return {"train": train, SELECTION: {k: [] for k in train}}
    if unit == "sentence" and "text_b" in train:
        raise DataError(f"data.selection_unit=sentence is not valid for {where}: it holds out whole sentences of a "
                        f"single-sentence task whose training file also holds their phrases (SST-2); a sentence-pair "
                        f"row is already a whole example: use data.selection_unit=row")
    pool = whole_sentences(train["text_a"]) if unit == "sentence" else list(range(total))
    if n >= len(pool):
        what = "whole sentences" if unit == "sentence" else "rows"
        raise DataError(f"data.selection_examples={n} is not valid for {where}: the training data has only "
                        f"{len(pool)} {what} (use a smaller value, or 0 to turn the selection split off)")
    rows = list(pool)
    random.Random(seed).shuffle(rows)
    chosen = set(rows[:n])
    # Training files repeat some texts (SST-2 has 366 duplicate lines): a training row whose text is also a
    # selection row's is dropped too, so the model has never seen any selection text; with unit=sentence, so is
    # a row whose text is a phrase of a selection sentence.
    if unit == "sentence":
        held = {sp for i in chosen for sp in _spans(_words(train["text_a"][i]))}
        keys = [_words(t) for t in train["text_a"]]
    else:
        keys = list(zip(*(train[k] for k in ("text_a", "text_b") if k in train)))
        held = {keys[i] for i in chosen}
    train_rows = [i for i in range(total) if i not in chosen and keys[i] not in held]
    take = lambda idx: {k: [v[i] for i in idx] for k, v in train.items()}  # noqa: E731
    return {"train": take(train_rows), SELECTION: take(sorted(chosen))}


class TokenizedSplit(Dataset):
    def __init__(self, name: str, features: List[Dict[str, list]]):
        self.name, self.features = name, features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> Dict[str, list]:
        return self.features[i]

    def lengths(self) -> List[int]:
        return [len(f["input_ids"]) for f in self.features]


class LengthGroupedSampler(Sampler[int]):
    """Shuffle, then sort within mega-batches of 50 batches by length: less padding, still random."""

    def __init__(self, lengths: List[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        mega = self.batch_size * 50
        groups = [sorted(order[i:i + mega], key=lambda j: -self.lengths[j]) for i in range(0, len(order), mega)]
        batches = [g[i:i + self.batch_size] for g in groups for i in range(0, len(g), self.batch_size)]
        rng.shuffle(batches)
        return iter([i for b in batches for i in b])


class Collator:
    """Dynamic padding to the longest sequence of the batch."""

    def __init__(self, pad_id: int, regression: bool):
        self.pad_id, self.regression = pad_id, regression

    def __call__(self, items: List[Dict[str, list]]) -> Dict[str, torch.Tensor]:
        L = max(len(it["input_ids"]) for it in items)
        batch = {
            "input_ids": torch.full((len(items), L), self.pad_id, dtype=torch.long),
            "attention_mask": torch.zeros(len(items), L, dtype=torch.long),
        }
        if "token_type_ids" in items[0]:
            batch["token_type_ids"] = torch.zeros(len(items), L, dtype=torch.long)
        for r, it in enumerate(items):
            n = len(it["input_ids"])
            batch["input_ids"][r, :n] = torch.tensor(it["input_ids"])
            batch["attention_mask"][r, :n] = 1
            if "token_type_ids" in batch:
                batch["token_type_ids"][r, :n] = torch.tensor(it["token_type_ids"])
        batch["labels"] = torch.tensor([it["label"] for it in items],
                                       dtype=torch.float if self.regression else torch.long)
        batch["idx"] = torch.tensor([it["idx"] for it in items], dtype=torch.long)
        return batch


class GLUEDataModule(pl.LightningDataModule):
    def __init__(self, task: TaskConfig, data: DataConfig, tokenizer, seed: int = 42):
        super().__init__()
        self.task_cfg, self.cfg, self.tokenizer, self.seed = task, data, tokenizer, seed
        self.spec: TaskSpec = TASKS[task.name]
        self.eval_split_names: List[str] = list(task.eval_splits or self.spec.eval_splits)
        self.eval_batch_size = data.batch_size  # the runner sets this per evaluation batch size
        self.splits: Dict[str, TokenizedSplit] = {}
        self._split: Optional[Dict[str, Columns]] = None
        # (the selection settings a checkpoint was trained with, its path): set by expect_selection
        self.trained_selection: Optional[tuple] = None

    # -- reading
    def _source(self) -> tuple:
        root = self.cfg.dir  # the configs default it to $EAT_GLUE_DIR
        source = self.cfg.source
        if source == "auto":
            source = "tsv" if root else "hub"
        return source, root

    def _read_raw(self, split: str) -> Columns:
        source, root = self._source()
        cols = load_split(self.spec, split, source, root, self.cfg.hub_path, self.cfg.split_files.get(split))
        if split in self.cfg.split_slices:
            cols = slice_columns(cols, self.cfg.split_slices[split])
        return cols

    def expect_selection(self, saved: Dict[str, object], path: str) -> None:
        """Refuse (ConfigError) to read training or selection rows unless this module's selection split is the one
        the checkpoint at `path` was trained with (`saved`: its selection_record); checked now if they were read."""
        self.trained_selection = (saved, path)
        if self._split is not None:
            check_selection(self.cfg, saved, path)

    def _selection_split(self) -> Dict[str, Columns]:
        if self.trained_selection is not None:
            check_selection(self.cfg, *self.trained_selection)
        if self._split is None:  # train and selection come from one split (unit=sentence takes seconds)
            self._split = split_selection(self._read_raw("train"), self.cfg.selection_examples,
                                          self.cfg.selection_seed, where=f"task {self.spec.name}",
                                          unit=self.cfg.selection_unit)
        return self._split

    def read(self, split: str) -> Columns:
        if split in ("train", SELECTION):
            cols = self._selection_split()[split]
        else:
            cols = self._read_raw(split)
        limit = self.cfg.max_train_samples if split == "train" else self.cfg.max_eval_samples
        if limit is not None:
            cols = {k: v[:limit] for k, v in cols.items()}
        return cols

    def tokenize(self, split: str, cols: Columns) -> TokenizedSplit:
        texts = (cols["text_a"], cols["text_b"]) if "text_b" in cols else (cols["text_a"],)
        enc = self.tokenizer(*texts, truncation=True, max_length=self.task_cfg.max_length)
        keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
        feats = [{**{k: enc[k][i] for k in keys}, "label": cols["label"][i], "idx": cols["idx"][i]}
                 for i in range(len(cols["label"]))]
        return TokenizedSplit(split, feats)

    def setup(self, stage: Optional[str] = None) -> None:
        wanted = list(self.eval_split_names)
        if stage in (None, "fit"):
            wanted.insert(0, "train")
        for split in wanted:
            if split not in self.splits:
                self.splits[split] = self.tokenize(split, self.read(split))

    # -- loaders
    def _collate(self) -> Collator:
        return Collator(self.tokenizer.pad_token_id, self.spec.is_regression)

    def train_dataloader(self) -> DataLoader:
        ds = self.splits["train"]
        if self.cfg.group_by_length:
            sampler = LengthGroupedSampler(ds.lengths(), self.cfg.batch_size, self.seed)
            return DataLoader(ds, batch_size=self.cfg.batch_size, sampler=sampler, collate_fn=self._collate(),
                              num_workers=self.cfg.num_workers)
        return DataLoader(ds, batch_size=self.cfg.batch_size, shuffle=True, collate_fn=self._collate(),
                          num_workers=self.cfg.num_workers)

    def _eval_loaders(self, batch_size: int) -> List[DataLoader]:
        # Original order, never shuffled or sorted: bs=1 and bs=N see the same examples in the same order.
        return [DataLoader(self.splits[s], batch_size=batch_size, shuffle=False, collate_fn=self._collate(),
                           num_workers=self.cfg.num_workers) for s in self.eval_split_names]

    def head_dataloader(self, split: str, n: int) -> DataLoader:
        """The first `n` rows of `split` in file order (exit calibration); the split is read on first use."""
        if split not in self.splits:
            self.splits[split] = self.tokenize(split, self.read(split))
        ds = self.splits[split]
        head = TokenizedSplit(split, ds.features[:n])
        return DataLoader(head, batch_size=self.cfg.batch_size, shuffle=False, collate_fn=self._collate())

    def val_dataloader(self) -> List[DataLoader]:
        return self._eval_loaders(self.cfg.batch_size)

    def test_dataloader(self) -> List[DataLoader]:
        return self._eval_loaders(self.eval_batch_size)
