"""Result files (respaths.io.results): the journal, resume after a cut record, refusal of another experiment."""
import json

import pytest

from respaths.core import UserError
from respaths.io.results import ResultStore


def test_result_store_resume_and_refusal(tmp_path):
    prefix = tmp_path / "exp"
    store = ResultStore(prefix, {"model": "m", "k": (1, 2)})
    store.append({"key": "b", "error": 0.5, "ci": [0.4, 0.6], "deleted": [3, 4]})
    store.append({"key": "a", "error": 0.25})
    with open(store.journal, "a") as f:
        f.write('{"key": "c", "err')  # a record cut by kill -9
    store = ResultStore(prefix, {"model": "m", "k": [1, 2]})
    assert store.done("a") and store.done("b") and not store.done("c")
    store.append({"key": "c", "error": 1.0})
    store.finish(order=["c", "b"])
    doc = json.loads((tmp_path / "exp.json").read_text())
    assert [r["key"] for r in doc["records"]] == ["c", "b", "a"]
    assert (tmp_path / "exp.csv").read_text().splitlines()[:2] == ["key,error,ci_low,ci_high,deleted", "c,1.0,,,"]
    assert not store.journal.exists()
    first = (tmp_path / "exp.json").read_text()
    again = ResultStore(prefix, {"model": "m", "k": [1, 2]})  # a finished run: everything done
    assert again.done("c")
    again.finish(order=["c", "b"])
    assert (tmp_path / "exp.json").read_text() == first
    with pytest.raises(UserError, match="different experiment.*--force"):
        ResultStore(prefix, {"model": "other", "k": [1, 2]})
    assert not ResultStore(prefix, {"model": "other"}, force=True).done("c")
