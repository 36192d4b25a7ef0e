"""Read raw records from one data source: jsonl, json, csv, parquet (a file or a folder of them), a
datasets.save_to_disk directory, or hf:owner/name.

jsonl and parquet files are read directly (jsonl keeps line numbers for messages); the other
formats and the hub go through `datasets`, whose Arrow files are memory-mapped, so records are
yielded one at a time rather than held twice.

Each reader yields (index, where, record): index is the record's stable position in its file
(0-based), `where` is how a message should point at it ("line 17", "row 16").
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from .config import DataError

Record = tuple[int, str, dict[str, Any]]


_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}  # datasets' builder per suffix


def read_records(path: str, split: str | None = None, *, config: str | None = None,
                 revision: str | None = None) -> Iterator[Record]:
    """All records of a source, in file order; DataError for a missing or unreadable source."""
    if path.startswith("hf:"):
        return _read_hub(path[3:], split, config, revision)
    p = Path(path)
    if not p.exists():
        raise DataError(f"data path not found: {path}")
    if p.is_dir():
        if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists():
            return _read_saved_dataset(p, split)
        return _read_folder(p, split)
    if p.suffix == ".parquet":
        return _read_parquet(p)
    if p.suffix == ".jsonl" or p.name.endswith(".jsonl.gz"):
        return _read_jsonl(p)
    if p.suffix in (".json", ".csv"):
        return _read_files([p], _BUILDERS[p.suffix], str(p))
    raise DataError(f"{path}: unknown data format (expected .jsonl, .json, .csv, .parquet, a folder of them, "
                    "a datasets directory or hf:owner/name)")


def _read_folder(p: Path, split: str | None) -> Iterator[Record]:
    """A folder of data files of one format (a split's files, e.g. train-0000*.parquet), in name order."""
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in _BUILDERS)
    if split is not None:  # hub-style layouts name the split in the file name (data/train-00000-of-00001.parquet)
        files = [f for f in files if split in f.name]
    builders = {_BUILDERS[f.suffix] for f in files}
    if not files:
        raise DataError(f"{p}: folder is neither a datasets.save_to_disk dataset nor holds .jsonl/.json/.csv/.parquet files{f' for split {split!r}' if split else ''}")
    if len(builders) > 1:
        raise DataError(f"{p}: folder mixes formats ({', '.join(sorted(f.suffix for f in files))}); keep one")
    return _read_files(files, builders.pop(), str(p))


def _read_files(files: list[Path], builder: str, label: str) -> Iterator[Record]:
    import datasets

    datasets.disable_progress_bars()  # a bar per file would bury the mix report
    try:
        ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    except Exception as e:
        if "corresponds to no data" in str(e):
            return iter(())  # a header-only csv, an empty json list: no records, like an empty jsonl  # a malformed csv/json: the library's first line says where
        raise DataError(f"{label}: cannot read as {builder} ({_first_line(e)})") from None
    return ((i, f"row {i}", rec) for i, rec in enumerate(ds))


def _read_jsonl(p: Path) -> Iterator[Record]:
    opener = _gzip_open if p.name.endswith(".gz") else open
    with opener(p, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue  # blank lines (e.g. a trailing one) are not records
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p} line {line_no}: not valid JSON ({e})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{p} line {line_no}: expected a JSON object, got {type(rec).__name__}")
            yield line_no - 1, f"line {line_no}", rec


def _gzip_open(p: Path, mode: str, encoding: str):
    import gzip

    return gzip.open(p, mode, encoding=encoding)


def _read_parquet(p: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except Exception as e:  # pyarrow raises several types; the message is what matters
        raise DataError(f"{p}: not a readable parquet file ({_first_line(e)})") from None
    return ((i, f"row {i}", rec) for i, rec in enumerate(table.to_pylist()))


def _read_saved_dataset(p: Path, split: str | None) -> Iterator[Record]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as e:
        raise DataError(f"{p}: cannot load saved dataset ({_first_line(e)})") from None
    ds = _pick_split(ds, split, str(p))
    return ((i, f"row {i}", rec) for i, rec in enumerate(ds))


def _read_hub(name: str, split: str | None, config: str | None, revision: str | None) -> Iterator[Record]:
    import datasets

    try:
        # Downloaded once into the datasets cache (HF_HOME); HF_HUB_OFFLINE=1 reads that cache only.
        ds = datasets.load_dataset(name, config, split=split or "train", revision=revision)
    except Exception as e:  # offline, unknown name, unknown split: one line is enough
        raise DataError(f"hf:{name}: cannot load from the hub ({_first_line(e)})") from None
    return ((i, f"row {i}", rec) for i, rec in enumerate(ds))


def _pick_split(ds: Any, split: str | None, label: str) -> Any:
    import datasets

    if not isinstance(ds, datasets.DatasetDict):
        if split is not None:
            raise DataError(f"{label}: split {split!r} given but the dataset has no splits")
        return ds
    if split is None:
        # A single split is unambiguous; otherwise `train` is the conventional default.
        split = next(iter(ds)) if len(ds) == 1 else "train"
    if split not in ds:
        raise DataError(f"{label}: no split {split!r} (has {', '.join(ds)})")
    return ds[split]


def _first_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
