"""Result files that survive kill -9: a JSON-lines journal while running, JSON + CSV when done.

`ResultStore(out_prefix, meta)` with out_prefix like `runs/lesion-single` writes

  runs/lesion-single.partial.jsonl  from the first record on: line 1 {"schema", "meta"}, then one record per
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
mix. Schema of the lesion and reorder records: see respaths.experiments.lesion and docs/result-files.md.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from .atomic import write_text
from ..core import UserError

SCHEMA = "respaths.io.results/1"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=True)


def _canonical(obj: Any) -> Any:
    """meta as it reads back from JSON (tuples become lists), so comparisons are like for like."""
    return json.loads(_dumps(obj))


def written_by_respaths(path: Path) -> bool:
    """Whether path is a result file respaths wrote: a journal or JSON document with our schema (the
    first line of a journal, the head of a document), or a CSV whose first column is the record key."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if path.suffix == ".csv":
        return head.startswith(b"key,") or head.strip() == b"key"
    return f'"schema":"{SCHEMA}"'.encode() in head.replace(b" ", b"")


class ResultStore:
    """Append-as-you-go records with resume; see the module docstring.

    Opening reads only: the directory and the journal appear with the first record (or at finish()),
    so a command that fails before it has a result leaves its --out as it found it."""

    def __init__(self, out_prefix: str | os.PathLike, meta: dict[str, Any], force: bool = False,
                 required: Sequence[str] = ()):
        """required: fields every record of this experiment has; a reopened record without one is damaged."""
        self.prefix = Path(out_prefix)
        self.required = tuple(required)
        self.journal = self.prefix.with_name(self.prefix.name + ".partial.jsonl")
        self.json_path = self.prefix.with_name(self.prefix.name + ".json")
        self.csv_path = self.prefix.with_name(self.prefix.name + ".csv")
        self.meta = _canonical(meta)
        self._records: dict[str, dict[str, Any]] = {}
        self._journal_open = False  # whether self.journal holds the header and every record so far
        # only our own files are ever replaced: a file of the same name that respaths did not write stays
        for p in (self.journal, self.json_path, self.csv_path) if force else (self.csv_path,):
            if p.exists() and not written_by_respaths(p):
                raise UserError(f"{p} was not written by respaths, and respaths never replaces such a file (not "
                                f"even with --force); move it away or choose another --out.")
        if force:
            for p in (self.journal, self.json_path, self.csv_path):
                p.unlink(missing_ok=True)
        if self.journal.exists():
            self._reopen_journal()
        elif self.json_path.exists():
            self._reopen_finished()

    # -- opening ---------------------------------------------------------------------------------
    def _mismatch(self, path: Path, old_meta: Any) -> UserError:
        old_meta = old_meta if isinstance(old_meta, dict) else {}
        diff = sorted(k for k in set(old_meta) | set(self.meta) if old_meta.get(k) != self.meta.get(k))
        return UserError(f"{path} holds results of a different experiment (differs in: {', '.join(diff)}); "
                         f"pass --force to overwrite it or choose another --out.")

    def _foreign(self, path: Path, what: str) -> UserError:
        return UserError(f"{path} is not a respaths result file ({what}); pass --force to overwrite it, "
                         f"delete it, or choose another --out.")

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
                if n == 0:
                    raise self._foreign(self.journal, "its first line is not JSON") from None
                break
            if n == 0:
                if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
                    raise self._foreign(self.journal, f"its first line is not a {SCHEMA} header")
                if obj.get("meta") != self.meta:
                    raise self._mismatch(self.journal, obj.get("meta"))
                head = obj
            elif self._is_record(obj):
                self._records.setdefault(obj["key"], obj)
            else:
                raise self._foreign(self.journal, f"line {n + 1} is not a result record")
            good += len(line) + 1
        if head is None:
            raise self._foreign(self.journal, "it has no header line")
        if good != len(data):  # a line cut by kill -9: drop it, it will be computed again
            with open(self.journal, "r+b") as f:
                f.truncate(good)
        self._journal_open = True

    def _reopen_finished(self) -> None:
        try:
            done = json.loads(self.json_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise self._foreign(self.json_path, "it is not valid JSON") from None
        if not isinstance(done, dict) or done.get("schema") != SCHEMA:
            raise self._foreign(self.json_path, f"it is not a {SCHEMA} document")
        if done.get("meta") != self.meta:
            raise self._mismatch(self.json_path, done.get("meta"))
        records = done.get("records")
        if not isinstance(records, list) or not all(self._is_record(r) for r in records):
            raise self._foreign(self.json_path, "its records are not a list of result records")
        for r in records:
            self._records.setdefault(r["key"], r)

    def _is_record(self, obj: Any) -> bool:
        return isinstance(obj, dict) and isinstance(obj.get("key"), str) and all(f in obj for f in self.required)

    def _start_journal(self) -> None:
        """The header and every record so far, written at once: a journal is never header-only."""
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        lines = [_dumps({"schema": SCHEMA, "meta": self.meta})] + [_dumps(r) for r in self._records.values()]
        write_text(self.journal, "\n".join(lines) + "\n")
        self._journal_open = True

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
        if not self._journal_open:
            self._records[key] = record
            self._start_journal()
            return
        with open(self.journal, "a", encoding="utf-8") as f:
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
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.json_path, to_json({"schema": SCHEMA, "meta": self.meta, **_canonical(extra)}, records))
        write_text(self.csv_path, to_csv(records))
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
