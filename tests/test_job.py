from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cometgen._bulk._job import (
    MAX_N,
    MAX_PROMPT_CHARS,
    Job,
    WorkItem,
    expand,
    image_sha256,
    item_key,
)
from cometgen._exceptions import InputError

FLASH = "gemini-3.1-flash-image-preview"
PRO = "gemini-3-pro-image-preview"
OLD = "gemini-2.5-flash-image"


def keys(job: Job, **kw: Any) -> list[str]:
    kw.setdefault("default_model", FLASH)
    return [item.key for item in expand(job, **kw)]


def one_key(**fields: Any) -> str:
    return keys(Job(**{"prompt": "a red fox", **fields}))[0]


# --- keys ------------------------------------------------------------------------------


def test_id_is_the_key_when_n_is_1() -> None:
    assert keys(Job(prompt="x", id="fox")) == ["fox"]


def test_id_keys_for_n_images_keep_the_first_as_the_id() -> None:
    # Raising n from 1 to 3 keeps the key of the first image: only the new ones are sent.
    assert keys(Job(prompt="x", id="fox", n=3)) == ["fox", "fox-1", "fox-2"]


def test_hash_key_is_pinned_across_versions() -> None:
    # Changing this value would make every existing manifest look unfinished on resume.
    assert one_key() == "h-8823f217866a2ea9cf9f"
    assert one_key().startswith("h-") and len(one_key()) == 22


def test_hash_key_is_reproducible_with_the_stdlib() -> None:
    # The documented scheme: sha256 of sorted, compact, UTF-8 JSON; first 20 hex chars.
    fields: dict[str, Any] = {
        "aspect_ratio": "16:9", "image_size": "2K", "images": ["ab" * 32], "index": 1,
        "model": PRO, "prompt": "un renard roux, «ünïcode» 🦊", "seed": 7,
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = "h-" + hashlib.sha256(canonical.encode()).hexdigest()[:20]
    assert item_key(prompt=fields["prompt"], model="models/" + PRO, aspect_ratio="16:9",
                    image_size="2K", seed=7, image_hashes=["ab" * 32], index=1) == expected


def test_hash_key_matches_item_key() -> None:
    assert one_key() == item_key(prompt="a red fox", model=FLASH, image_size="1K", index=0)


def test_hash_keys_for_n_images_are_distinct_and_extend_stably() -> None:
    three = keys(Job(prompt="p", n=3))
    five = keys(Job(prompt="p", n=5))
    assert len(set(three)) == 3
    assert five[:3] == three  # raising n later only adds requests
    assert keys(Job(prompt="p"))[0] == three[0]


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "a blue fox"},
        {"prompt": "a red fox "},
        {"model": PRO},
        {"aspect_ratio": "16:9"},
        {"image_size": "2K"},
        {"seed": 1},
        {"seed": 2},
        {"images": (b"\x89PNG\r\n\x1a\nA",)},
    ],
)
def test_hash_key_changes_with_each_request_field(change: dict[str, Any]) -> None:
    assert one_key(**change) != one_key()


def test_hash_key_depends_on_image_content_and_order() -> None:
    a, b = b"\x89PNG\r\n\x1a\nA", b"\x89PNG\r\n\x1a\nB"
    assert one_key(images=(a, b)) != one_key(images=(b, a))
    assert one_key(images=(a,)) != one_key(images=(b,))


@pytest.mark.parametrize(
    "change", [{"metadata": {"sku": 1}}, {"line": 99}, {"n": 4}],
)
def test_hash_key_ignores_metadata_line_and_n(change: dict[str, Any]) -> None:
    assert one_key(**change) == one_key()


def test_defaults_are_resolved_before_hashing() -> None:
    base = one_key()
    assert one_key(model=FLASH) == base
    assert one_key(model="models/" + FLASH) == base
    assert one_key(image_size="1K") == base  # 1K is the model default
    assert keys(Job(prompt="a red fox"), default_model=PRO) == [one_key(model=PRO)]
    ratio = keys(Job(prompt="a red fox"), default_aspect_ratio="16:9")
    assert ratio == [one_key(aspect_ratio="16:9")]
    size = keys(Job(prompt="a red fox"), default_image_size="2K")
    assert size == [one_key(image_size="2K")]


def test_job_options_win_over_run_defaults() -> None:
    [item] = expand(Job(prompt="p", model=PRO, aspect_ratio="4:3", image_size="4K"),
                    default_model=FLASH, default_aspect_ratio="16:9", default_image_size="2K")
    assert (item.model, item.aspect_ratio, item.image_size) == (PRO, "4:3", "4K")


def test_work_items_carry_resolved_options() -> None:
    job = Job(prompt="p", n=2, id="j")
    items = expand(job, default_model="models/" + FLASH)
    assert items == [
        WorkItem(key="j", job=job, index=0, model=FLASH, aspect_ratio=None, image_size="1K",
                 fingerprint=items[0].fingerprint),
        WorkItem(key="j-1", job=job, index=1, model=FLASH, aspect_ratio=None, image_size="1K",
                 fingerprint=items[0].fingerprint),
    ]


def test_run_default_size_is_dropped_for_a_model_without_sizes() -> None:
    [item] = expand(Job(prompt="p", model=OLD), default_model=FLASH, default_image_size="2K")
    assert item.image_size is None


def test_unknown_model_keeps_options_unresolved() -> None:
    [item] = expand(Job(prompt="p"), default_model="some-future-model")
    assert (item.model, item.image_size) == ("some-future-model", None)


def test_expand_rejects_run_defaults_the_model_cannot_take() -> None:
    with pytest.raises(InputError) as info:
        expand(Job(prompt="p", model=PRO, line=7), default_model=FLASH,
               default_aspect_ratio="1:8")
    assert info.value.field == "aspect_ratio"
    assert str(info.value).startswith("7: field 'aspect_ratio': '1:8' is not supported by")


def test_image_hashes_are_read_from_files_when_not_given(tmp_path: Path) -> None:
    data = b"\x89PNG\r\n\x1a\nxyz"
    (tmp_path / "a.png").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert image_sha256(tmp_path / "a.png") == digest == image_sha256(data)
    from_file = keys(Job(prompt="p", images=(str(tmp_path / "a.png"),)))
    assert from_file == keys(Job(prompt="p", images=(data,)))
    assert from_file == keys(Job(prompt="p", images=("elsewhere.png",)), image_hashes=[digest])


def test_image_hash_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read reference image"):
        keys(Job(prompt="p", images=(str(tmp_path / "gone.png"),)))
    with pytest.raises(ValueError, match="got 2 image hashes for 1 reference images"):
        keys(Job(prompt="p", images=(b"x",)), image_hashes=["a", "b"])


# --- Job validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"n": 0}, "n", "must be between 1 and 64, got 0"),
        ({"n": MAX_N + 1}, "n", "must be between 1 and 64, got 65"),
        ({"n": True}, "n", "expected an integer, got boolean"),
        ({"n": 2.0}, "n", "expected an integer, got number"),
        ({"prompt": ""}, "prompt", "must not be empty"),
        ({"prompt": "  \n"}, "prompt", "must not be empty"),
        ({"prompt": "a\x00b"}, "prompt", "contains a NUL character"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt",
         "is 100001 characters long (at most 100000)"),
        ({"prompt": 5}, "prompt", "expected a string, got integer"),
        ({"id": ""}, "id", "must not be empty"),
        ({"id": 5}, "id", "expected a string, got integer"),
        ({"id": "a\tb"}, "id", "must not contain control characters"),
        ({"id": "x" * 201}, "id", "is 201 characters long (at most 200)"),
        ({"model": ""}, "model", "must not be empty"),
        ({"aspect_ratio": 1}, "aspect_ratio", "expected a string, got integer"),
        ({"seed": 2**31}, "seed", "must fit in 32 bits, got 2147483648"),
        ({"seed": "1"}, "seed", "expected an integer, got string"),
        ({"images": ("a.png", 3)}, "images[1]", "expected a path or bytes, got integer"),
    ],
)
def test_job_rejects_bad_fields(fields: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        Job(**{"prompt": "p", **fields})
    assert info.value.field == field
    assert info.value.reason.startswith(message)
    assert str(info.value).startswith(f"field {field!r}: {message}")


def test_job_is_frozen_and_takes_a_list_of_images_without_keeping_it() -> None:
    images: list[str | bytes] = ["a.png"]
    job = Job(prompt="p", images=images)  # type: ignore[arg-type]
    images.append("b.png")
    assert job.images == ("a.png",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.prompt = "q"  # type: ignore[misc]


def test_job_accepts_edge_values() -> None:
    Job(prompt="x" * MAX_PROMPT_CHARS, n=MAX_N, seed=-(2**31), id="x" * 200)


# --- properties ----------------------------------------------------------------------------

_text = st.text(min_size=1, max_size=30).filter(lambda s: s.strip() and "\x00" not in s)
_ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\\"),
    min_size=1, max_size=20,
).filter(lambda s: s not in (".", ".."))


@settings(max_examples=200, deadline=None)
@given(
    prompt=_text,
    model=st.sampled_from([None, FLASH, PRO, OLD, "models/" + PRO]),
    aspect_ratio=st.sampled_from([None, "1:1", "16:9", "3:4"]),
    seed=st.none() | st.integers(-(2**31), 2**31 - 1),
    n=st.integers(1, 4),
    images=st.lists(st.binary(max_size=8), max_size=3).map(tuple),
    metadata=st.none() | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    job_id=_ids,
)
def test_ids_only_change_keys(
    prompt: str, model: str | None, aspect_ratio: str | None, seed: int | None, n: int,
    images: tuple[bytes, ...], metadata: Any, job_id: str,
) -> None:
    fields: dict[str, Any] = dict(prompt=prompt, model=model, aspect_ratio=aspect_ratio,
                                  seed=seed, n=n, images=images, metadata=metadata)
    anonymous = expand(Job(**fields), default_model=FLASH)
    named = expand(Job(**fields, id=job_id), default_model=FLASH)
    assert len(named) == len(anonymous) == n
    for a, b in zip(anonymous, named, strict=True):
        assert dataclasses.replace(b, key=a.key, job=a.job, fingerprint=None) == a
        assert dataclasses.replace(b.job, id=None) == a.job
        assert a.key.startswith("h-")
    assert [i.key for i in named] == [job_id] + [f"{job_id}-{i}" for i in range(1, n)]
    assert len({i.key for i in anonymous}) == n


def test_file_hash_follows_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"one")
    first = image_sha256(path)
    path.write_bytes(b"two!")  # a different size, so a different cache entry
    assert image_sha256(str(path)) == hashlib.sha256(b"two!").hexdigest() != first
