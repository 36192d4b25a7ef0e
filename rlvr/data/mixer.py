"""Load several sources and mix them by fraction, count or upsampling factor (like open-instruct's
dataset_mixer_list), seeded, keeping a report of what was taken from each source."""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import DataConfig, DataError, DataSourceConfig
from .mapping import map_record
from .normalize import names_own_verifier, normalize_record
from .readers import read_records

MAX_EXAMPLES = 5  # dropped-row locations kept per reason, enough to find the pattern


@dataclass
class SourceReport:
    source: str
    path: str
    available: int = 0          # records in the file
    valid: int = 0              # records left after dropping unusable ones
    taken: int = 0              # rows contributed to the mix (can exceed valid when upsampled)
    dropped: dict[str, int] = field(default_factory=dict)          # reason -> count
    examples: dict[str, list[str]] = field(default_factory=dict)   # reason -> first locations


@dataclass
class MixReport:
    sources: list[SourceReport] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(s.taken for s in self.sources)

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "sources": [asdict(s) for s in self.sources]}

    def __str__(self) -> str:
        return mix_report(self)


class Rows(list):
    """A list of normalised rows that also carries the MixReport of how it was built."""

    report: MixReport

    def __init__(self, rows: list[dict[str, Any]], report: MixReport):
        super().__init__(rows)
        self.report = report


def load_sources(sources: list[DataSourceConfig], seed: int = 0, strict: bool = False) -> Rows:
    """Read, normalise and mix `sources` in order; the result has a `.report` (see mix_report)."""
    rows: list[dict[str, Any]] = []
    report = MixReport()
    for src in sources:
        valid, rep = _load_one(src, strict)
        taken = _take(valid, src, random.Random(f"{seed}/{src.label}"))
        rep.taken = len(taken)
        rows.extend(taken)
        report.sources.append(rep)
    return Rows(rows, report)


def _load_one(src: DataSourceConfig, strict: bool) -> tuple[list[dict[str, Any]], SourceReport]:
    rep = SourceReport(source=src.label, path=src.path)
    valid = []
    used_default = 0
    own: set[str] = set()
    for index, where, rec in read_records(src.path, src.split, config=src.config, revision=src.revision):
        rep.available += 1
        at = f"{src.path} {where}"
        if src.mapped:
            rec = map_record(rec, src, at)
        row, reason = normalize_record(rec, source=src.label, index=index, where=at,
                                       default_verifier=src.verifier, default_env=src.env)
        if row is not None:
            valid.append(row)
            if src.verifier is not None:
                if names_own_verifier(rec, at):
                    own.update(row["verifier"])
                else:
                    used_default += 1
            continue
        if strict:
            raise DataError(f"{at}: {reason}")
        rep.dropped[reason] = rep.dropped.get(reason, 0) + 1
        examples = rep.examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(where)
    rep.valid = len(valid)
    if src.verifier is not None and valid and not used_default and src.verifier not in own:
        # A default no row uses is a misunderstanding (rows' `dataset` column wins); say so before any run.
        # Rows naming it among their own verifiers agree with it.
        raise DataError(f"data source {src.label}: verifier: {src.verifier!r} is used by no row: every row names its own "
                        f"({', '.join(sorted(own))}, from its 'verifier'/'dataset' column), which overrides it; drop "
                        "verifier: or map another column with verifier_key")
    return valid, rep


def _take(rows: list[dict[str, Any]], src: DataSourceConfig, rng: random.Random) -> list[dict[str, Any]]:
    n = len(rows)
    if src.fraction is not None:
        want = round(src.fraction * n)
    elif src.count is not None:
        want = src.count
    elif src.upsample is not None:
        want = round(src.upsample * n)
    else:
        return rows
    if want and not n:
        raise DataError(f"data source {src.label}: asked for {want} rows but it has no usable rows")
    # Whole copies first, then a seeded sample for the remainder, so upsampling by 2.5 means
    # every row twice and half of them a third time (open-instruct's rule).
    full, rest = divmod(want, n) if n else (0, 0)
    picked = sorted(rng.sample(range(n), rest))
    out = [dict(r) for _ in range(full) for r in rows]
    out.extend(dict(rows[i]) for i in picked)
    return out


def mix_report(rows_or_report: Rows | MixReport) -> str:
    """Human-readable lines: per source, rows available, usable, taken, and what was dropped why."""
    report = rows_or_report.report if isinstance(rows_or_report, Rows) else rows_or_report
    lines = [f"data mix: {report.total} rows from {len(report.sources)} source(s)"]
    for s in report.sources:
        lines.append(f"  {s.source}: available {s.available}, usable {s.valid}, taken {s.taken}")
        for reason, count in s.dropped.items():
            shown = ", ".join(s.examples.get(reason, []))
            more = ", ..." if count > len(s.examples.get(reason, [])) else ""
            lines.append(f"    dropped {count} ({reason}): {shown}{more}")
    return "\n".join(lines)


def load_eval(cfg: DataConfig) -> Rows:
    """The eval rows of a DataConfig: every eval source in full (amounts apply as for train),
    then at most cfg.eval_size of them, a seeded sample kept in source order."""
    rows = load_sources(cfg.eval, seed=cfg.seed, strict=cfg.strict)
    if cfg.eval_size is None or len(rows) <= cfg.eval_size:
        return rows
    keep = sorted(random.Random(f"{cfg.seed}/eval").sample(range(len(rows)), cfg.eval_size))
    return Rows([rows[i] for i in keep], rows.report)
