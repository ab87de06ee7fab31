"""Malformed GLUE files stop the job with the file and line named, and leave no results row; well-formed GLUE
files are read byte for byte, and the parquet source agrees with the TSV source."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from eat.data.sources import DataError, load_split, read_glue_tsv
from eat.data.tasks import TASKS
from tests.conftest import GLUE_DIR, TINY, compose_cfg, needs_glue, run_script

SST2 = TASKS["sst2"]
GOOD_DEV = b"sentence\tlabel\na fine film \t1\na dull film \t0\nit works \t1\n"

# kind -> (train.tsv bytes, "train.tsv:<line>" the message must name, another string it must contain)
BAD_FILES = {
    "missing_column": (b"text\tlabel\ngood \t1\nbad \t0\n", "train.tsv:1", "missing column(s) ['sentence']"),
    "label_outside_set": (b"sentence\tlabel\ngood \t1\nodd \t2\n", "train.tsv:3", "label '2' not in the sst2 label set"),
    "empty_file": (b"", "train.tsv:1", "empty file"),
    "header_only": (b"sentence\tlabel\n", "train.tsv:2", "no data rows"),
    "ragged_row": (b"sentence\tlabel\ngood \t1\nbad \t0\textra\nfine \t1\n", "train.tsv:3",
                   "expected 2 tab-separated fields, found 3"),
    "missing_field": (b"sentence\tlabel\ngood \t1\nno label here\n", "train.tsv:3",
                      "expected 2 tab-separated fields, found 1"),
    "not_utf8": (b"sentence\tlabel\ngood \t1\ncaf\xe9 au lait \t1\n", "train.tsv:3", "not valid UTF-8"),
    "empty_text": (b"sentence\tlabel\ngood \t1\n \t0\n", "train.tsv:3", "empty text in column 1"),
    "empty_label": (b"sentence\tlabel\ngood \t1\nbad \t\n", "train.tsv:3", "label '' not in"),
}


def glue_folder(root: Path, train: bytes, dev: bytes = GOOD_DEV) -> Path:
    """A GLUE folder layout with one task: root/SST-2/{train,dev}.tsv."""
    (root / "SST-2").mkdir(parents=True)
    (root / "SST-2" / "train.tsv").write_bytes(train)
    (root / "SST-2" / "dev.tsv").write_bytes(dev)
    return root


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "results.csv").exists(), "a results row was written despite bad data"
    assert not list(tmp_path.rglob("*.ckpt")), "a checkpoint was written despite bad data"


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_reader_names_file_and_line(kind, tmp_path):
    content, where, what = BAD_FILES[kind]
    root = glue_folder(tmp_path / "glue", content)
    with pytest.raises(DataError) as err:
        load_split(SST2, "train", "tsv", str(root), "unused")
    msg = str(err.value)
    assert f"{root / 'SST-2' / where}" in msg and what in msg, msg


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_training_stops_on_bad_data(kind, tmp_path):
    """The whole job, in-process (train.py's code path without its imports): a DataError, nothing written."""
    from eat.runner import run

    content, where, what = BAD_FILES[kind]
    root = glue_folder(tmp_path / "glue", content)
    cfg = compose_cfg([*TINY, f"data.dir={root}", f"output_dir={tmp_path / 'run'}",
                       f"results_csv={tmp_path / 'results.csv'}"])
    with pytest.raises(DataError) as err:
        run(cfg)
    assert where in str(err.value) and what in str(err.value), str(err.value)
    assert_nothing_written(tmp_path)


def test_bad_dev_file_is_reported_too(tmp_path):
    root = glue_folder(tmp_path / "glue", GOOD_DEV, dev=b"sentence\tlabel\nfine \t1\nfine \t1\nbad \tpositive\n")
    with pytest.raises(DataError, match=r"dev\.tsv:4: label 'positive' not in"):
        load_split(SST2, "validation", "tsv", str(root), "unused")


def test_pair_task_ragged_row(tmp_path):
    (tmp_path / "MNLI").mkdir()
    header = "\t".join(["index", "promptID", "pairID", "genre", "s1b", "s2b", "s1p", "s2p", "sentence1", "sentence2",
                        "label1", "gold_label"])
    good = "\t".join(["0", "", "", "", "", "", "", "", "A man sleeps.", "Someone rests.", "", "entailment"])
    (tmp_path / "MNLI" / "dev_matched.tsv").write_text(f"{header}\n{good}\n{good[:-11]}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dev_matched\.tsv:3: expected 12 tab-separated fields, found 11"):
        load_split(TASKS["mnli"], "validation_matched", "tsv", str(tmp_path), "unused")


# What a user sees: train.py as its own process exits 2 with one line naming file and line.
@pytest.mark.parametrize("kind", ["label_outside_set", "not_utf8"])
def test_train_py_exits_2_on_bad_data(kind, tmp_path):
    content, where, what = BAD_FILES[kind]
    root = glue_folder(tmp_path / "glue", content)
    p = run_script("train.py", [*TINY, f"data.dir={root}", f"results_csv={tmp_path / 'results.csv'}"], tmp_path,
                   timeout=180)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out[-3000:]
    assert f"error: {root / 'SST-2' / where}" in p.stderr and what in p.stderr, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert_nothing_written(tmp_path)


# ----------------------------------------------------------------------------- well-formed files
def raw_fields(path: Path):
    """The GLUE README's recipe: split the bytes on newlines and tabs, nothing else."""
    lines = path.read_bytes().decode("utf-8").split("\n")
    assert lines[-1] == ""
    return [line.split("\t") for line in lines[1:-1]], lines[0].split("\t")


@needs_glue
def test_sst2_dev_text_is_byte_exact():
    path = GLUE_DIR / "SST-2" / "dev.tsv"
    rows, header = raw_fields(path)
    cols = read_glue_tsv(str(path), SST2)
    assert cols["text_a"] == [r[0] for r in rows]
    assert cols["label"] == [int(r[1]) for r in rows]
    assert cols["idx"] == list(range(len(rows))) and len(rows) == 872
    assert all(t.endswith(" ") for t in cols["text_a"])  # the trailing space before each tab is kept


@needs_glue
def test_qqp_quotes_are_kept():
    path = GLUE_DIR / "QQP" / "dev.tsv"
    rows, header = raw_fields(path)
    cols = read_glue_tsv(str(path), TASKS["qqp"])
    q1, q2, y = (header.index(c) for c in ("question1", "question2", "is_duplicate"))
    assert cols["text_a"] == [r[q1] for r in rows] and cols["text_b"] == [r[q2] for r in rows]
    assert cols["label"] == [int(r[y]) for r in rows]
    quoted = [t for t in cols["text_a"] + cols["text_b"] if '"' in t]
    assert len(quoted) > 100  # literal quotes, not eaten as CSV quoting
    # a csv-module reader with default quoting would have changed them: make sure this data would notice
    with open(path, newline="", encoding="utf-8") as f:
        naive = [r for r in csv.reader(f, delimiter="\t")][1:]
    assert [r[q1] for r in naive if len(r) > q1] != cols["text_a"]


@needs_glue
def test_parquet_source_matches_tsv_source():
    parquet_root = GLUE_DIR / "_source_parquet"
    if not (parquet_root / "mnli").is_dir():
        pytest.skip(f"no parquet copy of MNLI at {parquet_root}")
    spec = TASKS["mnli"]
    tsv = load_split(spec, "validation_matched", "tsv", str(GLUE_DIR), "unused")
    pq = load_split(spec, "validation_matched", "parquet", str(parquet_root), "unused")
    assert len(tsv["label"]) == len(pq["label"]) == 9815
    for k in ("text_a", "text_b", "label", "idx"):
        assert tsv[k] == pq[k], k


def test_demo_data_reads_and_is_balanced():
    """The shipped demo sample (eat/data/demo) is valid GLUE SST-2 data, balanced, and its splits are disjoint."""
    from eat.config import package_path

    root = package_path("data/demo")
    train = load_split(SST2, "train", "tsv", root, "unused")
    dev = load_split(SST2, "validation", "tsv", root, "unused")
    assert len(train["label"]) == 200 and sum(train["label"]) == 100
    assert len(dev["label"]) == 60 and sum(dev["label"]) == 30
    assert not set(train["text_a"]) & set(dev["text_a"])
    assert len(set(train["text_a"])) == 200


def test_demo_experiment_points_at_the_shipped_data(tmp_path):
    cfg = compose_cfg(["experiment=demo", f"output_dir={tmp_path}"])
    assert cfg.model.name == "tiny" and cfg.task.name == "sst2"
    from eat.config import package_path

    assert cfg.data.dir == package_path("data/demo")
    assert all(Path(cfg.data.dir, "SST-2", f).is_file() for f in ("train.tsv", "dev.tsv"))
    assert cfg.results_csv == "outputs/demo/results.csv"  # an experiment overrides what train.yaml sets
