"""KeySet: Batch's compact dedupe set; and the cached-second timestamp."""

from __future__ import annotations

import datetime
import re

from hypothesis import given
from hypothesis import strategies as st

from cometgen._bulk._item_runner import now_iso
from cometgen._bulk._keyset import KeySet


@given(st.lists(st.text(), max_size=200))
def test_behaves_like_a_set(keys: list[str]) -> None:
    ks, ref = KeySet(), set[str]()
    for key in keys:
        assert ks.add(key) == (key not in ref)
        ref.add(key)
        assert key in ks
    assert len(ks) == len(ref)


def test_many_keys_and_odd_ones() -> None:
    ks = KeySet()
    keys = [f"item-{i:07d}" for i in range(200_000)] + ["", "\udc80 lone surrogate", "é"]
    assert all(ks.add(k) for k in keys)
    assert not any(ks.add(k) for k in keys)
    assert "item-0200000" not in ks and 42 not in ks
    assert len(ks) == len(keys)


def test_now_iso_matches_datetime() -> None:
    before = datetime.datetime.now(datetime.UTC)
    text = now_iso()
    after = datetime.datetime.now(datetime.UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", text)
    parsed = datetime.datetime.fromisoformat(text)
    assert before - datetime.timedelta(milliseconds=1) <= parsed <= after


@given(st.text(alphabet="abcXYZ019_-.: é", max_size=140) | st.sampled_from(
    ["con", "COM1", "nul", "lpt9", "a" * 121, "a" * 250, "-", "_x"]))
def test_safe_stem_fast_path_matches_the_full_scan(item_id: str) -> None:
    import re as re_

    from cometgen import _files

    fast = [_files.safe_stem(item_id), _files.safe_stem(item_id, max_len=300)]
    saved = _files._PLAIN
    _files._PLAIN = re_.compile(r"(?!)")  # type: ignore[misc]
    try:
        slow = [_files.safe_stem(item_id), _files.safe_stem(item_id, max_len=300)]
    finally:
        _files._PLAIN = saved  # type: ignore[misc]
    assert fast == slow


def test_mock_request_log_keeps_only_the_newest() -> None:
    import pytest as pytest_

    from cometgen.testing import _stats

    mp = pytest_.MonkeyPatch()
    mp.setattr(_stats, "LOG_LIMIT", 3)
    try:
        stats = _stats.MockStats()
        for i in range(5):
            stats.record(_stats.RequestRecord(float(i), "m", f"p{i}", 200, "success"))
    finally:
        mp.undo()
    assert stats.requests == 5 and [r.prompt for r in stats.log] == ["p2", "p3", "p4"]
