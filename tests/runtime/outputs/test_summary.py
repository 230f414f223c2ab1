"""Reading a result folder's summary.json back: absent, finished, or broken with the fix named."""

from __future__ import annotations

import json

import pytest

from tseg.runtime.errors import OutputError
from tseg.runtime.outputs.summary import SUMMARY, read_summary


def test_absent_summary_is_none(tmp_path):
    assert read_summary(tmp_path) is None


def test_a_summary_reads_back(tmp_path):
    (tmp_path / SUMMARY).write_text(json.dumps({"areas": {"regions": 2}}), encoding="utf-8")
    assert read_summary(tmp_path) == {"areas": {"regions": 2}}


@pytest.mark.parametrize("content, why", [
    (b'{"areas": ', "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"[1, 2]", "not a JSON object"),
])
def test_a_broken_summary_names_the_file_and_the_fix(tmp_path, content, why):
    (tmp_path / SUMMARY).write_bytes(content)
    with pytest.raises(OutputError, match=why) as caught:
        read_summary(tmp_path)
    assert str(tmp_path / SUMMARY) in str(caught.value)
    assert "--overwrite" in str(caught.value)
