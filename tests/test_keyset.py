"""KeySet: Batch's compact dedupe set; and the cached-second timestamp."""

from __future__ import annotations

import datetime
import re

from hypothesis import given
from hypothesis import strategies as st

from cometgen._item_runner import now_iso
from cometgen._keyset import KeySet


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
