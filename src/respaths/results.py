"""Result files that survive kill -9: a JSON-lines journal while running, JSON + CSV when done.

`ResultStore(out_prefix, meta)` with out_prefix like `runs/lesion-single` writes

  runs/lesion-single.partial.jsonl  while running: line 1 {"schema", "meta"}, then one record per
                                    line, appended and fsynced as each record finishes;
  runs/lesion-single.json           at finish(): {"schema", "meta", **extra, "records": [...]};
  runs/lesion-single.csv            at finish(): one row per record, nested fields flattened.

Both final files are written to a temporary name and renamed into place, so they are either absent
or complete. Running the same command again reopens the journal (or the finished JSON), skips the
records whose "key" is done, and finish() writes the same files again: records are sorted
deterministically (by the caller's `order`, then by key) and every value comes from the journal.
Only wall-clock fields ("seconds") differ between two separate runs of the same experiment.

`meta` describes *what* is computed (model, dataset, number of images, blocks, experiment
parameters); reopening with a different meta is refused, so that results from two experiments never
mix. Schema of the lesion and reorder records: see respaths.lesion and the README, "Result files".
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from .core import UserError

SCHEMA = "respaths.results/1"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=True)


def _canonical(obj: Any) -> Any:
    """meta as it reads back from JSON (tuples become lists), so comparisons are like for like."""
    return json.loads(_dumps(obj))


def write_atomic(path: Path, text: str) -> None:
    """Write text to path so that the file is either the old one or the whole new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ResultStore:
    """Append-as-you-go records with resume; see the module docstring."""

    def __init__(self, out_prefix: str | os.PathLike, meta: dict[str, Any], force: bool = False):
        self.prefix = Path(out_prefix)
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self.journal = self.prefix.with_name(self.prefix.name + ".partial.jsonl")
        self.json_path = self.prefix.with_name(self.prefix.name + ".json")
        self.csv_path = self.prefix.with_name(self.prefix.name + ".csv")
        self.meta = _canonical(meta)
        self._records: dict[str, dict[str, Any]] = {}
        if force:
            for p in (self.journal, self.json_path, self.csv_path):
                p.unlink(missing_ok=True)
        if self.journal.exists():
            self._reopen_journal()
        elif self.json_path.exists():
            self._reopen_finished()
        if not self.journal.exists():
            self._start_journal()

    # -- opening ---------------------------------------------------------------------------------
    def _mismatch(self, path: Path, old_meta: Any) -> UserError:
        diff = sorted(k for k in set(old_meta or {}) | set(self.meta)
                      if (old_meta or {}).get(k) != self.meta.get(k))
        return UserError(f"{path} holds results of a different experiment (differs in: {', '.join(diff)}); "
                         f"pass --force to overwrite it or choose another --out.")

    def _reopen_journal(self) -> None:
        with open(self.journal, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        good = 0  # bytes up to the end of the last complete, parseable line
        head = None
        for n, line in enumerate(lines[:-1]):  # the part after the last newline is incomplete
            try:
                obj = json.loads(line)
            except ValueError:
                break
            if n == 0:
                head = obj
            else:
                self._records.setdefault(obj["key"], obj)
            good += len(line) + 1
        if head is None or head.get("schema") != SCHEMA:
            raise UserError(f"{self.journal} is not a respaths result journal; remove it or choose another --out.")
        if head.get("meta") != self.meta:
            raise self._mismatch(self.journal, head.get("meta"))
        if good != len(data):  # a line cut by kill -9: drop it, it will be computed again
            with open(self.journal, "r+b") as f:
                f.truncate(good)

    def _reopen_finished(self) -> None:
        try:
            done = json.loads(self.json_path.read_text())
        except ValueError:
            raise UserError(f"{self.json_path} is not valid JSON; remove it or choose another --out.") from None
        if done.get("schema") != SCHEMA or done.get("meta") != self.meta:
            raise self._mismatch(self.json_path, done.get("meta"))
        self._start_journal()
        for r in done["records"]:
            self.append(r)

    def _start_journal(self) -> None:
        with open(self.journal, "w") as f:
            f.write(_dumps({"schema": SCHEMA, "meta": self.meta}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    # -- records ---------------------------------------------------------------------------------
    def done(self, key: str) -> bool:
        return key in self._records

    @property
    def records(self) -> list[dict[str, Any]]:
        return list(self._records.values())

    def get(self, key: str) -> dict[str, Any] | None:
        return self._records.get(key)

    def append(self, record: dict[str, Any]) -> None:
        """Add one finished record; it is on disk when this returns. A key already done is ignored."""
        key = record.get("key")
        if not isinstance(key, str) or not key:
            raise ValueError("a result record needs a non-empty string 'key'.")
        if key in self._records:
            return
        record = _canonical(record)
        with open(self.journal, "a") as f:
            f.write(_dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._records[key] = record

    # -- finishing -------------------------------------------------------------------------------
    def sorted_records(self, order: Sequence[str] | None = None) -> list[dict[str, Any]]:
        rank = {k: i for i, k in enumerate(order or [])}
        return sorted(self._records.values(), key=lambda r: (rank.get(r["key"], len(rank)), r["key"]))

    def finish(self, order: Sequence[str] | None = None, **extra: Any) -> Path:
        """Write <prefix>.json and <prefix>.csv atomically and remove the journal; returns the JSON path.

        order: keys in the order records should appear (others follow, sorted by key);
        extra: further top-level fields (e.g. the baseline), derived from the records."""
        records = self.sorted_records(order)
        write_atomic(self.json_path, to_json({"schema": SCHEMA, "meta": self.meta, **_canonical(extra)}, records))
        write_atomic(self.csv_path, to_csv(records))
        self.journal.unlink(missing_ok=True)
        return self.json_path


def to_json(head: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The result document with one top-level field, and one record, per line: diff-friendly."""
    lines = [f" {json.dumps(k)}: {_dumps(v)}," for k, v in head.items()]
    body = ",\n".join("  " + _dumps(r) for r in records)
    return "{\n" + "\n".join(lines) + '\n "records": [\n' + body + ("\n" if records else "") + " ]\n}\n"


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'ci': [0.1, 0.2], 'deleted': [3, 7]} -> {'ci_low': 0.1, 'ci_high': 0.2, 'deleted': '3 7'}."""
    flat: dict[str, Any] = {}
    for k, v in record.items():
        name = prefix + k
        if isinstance(v, dict):
            flat.update(_flatten(v, name + "_"))
        elif isinstance(v, (list, tuple)) and name.endswith("ci") and len(v) == 2:
            flat[name + "_low"], flat[name + "_high"] = v
        elif isinstance(v, (list, tuple)):
            flat[name] = " ".join(str(x) for x in v)
        else:
            flat[name] = v
    return flat


def to_csv(records: Iterable[dict[str, Any]]) -> str:
    rows = [_flatten(r) for r in records]
    columns: dict[str, None] = {"key": None}
    for r in rows:
        columns.update(dict.fromkeys(r))
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()
