"""The model registry (models.toml), ``--models FILE``, status warnings and ``cometgen models``
(including ``--refresh`` against the mock's catalogue)."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import cometgen
from cometgen._bulk._pricing import load_prices
from cometgen._exceptions import ConfigError
from cometgen._models import KNOWN_MODELS, load_models, model_spec, use_models
from cometgen.testing import MockServer, ThreadedMockServer
from tests._cli import run_cli

pytestmark = pytest.mark.anyio


@pytest.fixture
def mock() -> Iterator[ThreadedMockServer]:
    with MockServer().run_in_thread() as server:
        yield server


def test_builtin_registry_facts() -> None:
    reg = load_models()
    assert load_models() is reg  # parsed once
    flash = reg.get("models/gemini-3.1-flash-image")
    assert flash is not None and flash.status == "ga"
    assert flash.released == datetime.date(2026, 5, 28)
    assert flash.image_sizes == ("512", "1K", "2K", "4K") and len(flash.aspect_ratios) == 14
    assert dict(flash.image_tokens) == {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520}
    preview = reg.get("gemini-3.1-flash-image-preview")
    assert preview is not None and preview.status == "retired"
    assert preview.alias_of == preview.family == "gemini-3.1-flash-image"
    assert preview.retired == datetime.date(2026, 6, 25)
    assert preview.image_tokens == flash.image_tokens  # an alias shares its target's facts
    old = reg.get("gemini-2.5-flash-image")
    assert old is not None and old.status == "retired" and old.search is False
    lite = reg.get("gemini-3.1-flash-lite-image")
    assert lite is not None and lite.image_sizes == ("1K",) and lite.flex is False
    pro = reg.get("gemini-3-pro-image")
    assert pro is not None and pro.timeout is not None and pro.timeout >= 300
    assert reg.get("gemini-9-ultra") is None
    assert reg.tier_multiplier("flex") == 0.5 and reg.tier_multiplier("batch") == 0.5
    assert all(load_prices().price(m) is not None for m in KNOWN_MODELS)


def test_every_fact_block_names_a_source() -> None:
    text = (Path(cometgen.__file__).parent / "models.toml").read_text()
    for url in ("ai.google.dev/gemini-api/docs/changelog", "docs/deprecations",
                "docs/pricing", "flex-inference", "models/gemini-3.1-flash-lite-image"):
        assert url in text


def test_override_file_extends_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "models.toml"
    f.write_text(
        '[tiers]\nflex = 0.4\n'
        '[models."gemini-3-pro-image"]\ntimeout = 600\n'
        '[models."my-image"]\nstatus = "preview"\naspect_ratios = ["1:1"]\n'
        'image_sizes = ["1K"]\ndefault_image_size = "1K"\nimage_tokens = { "1K" = 1000 }\n'
        'prices = { input_per_m = 1, text_output_per_m = 1, image_output_per_m = 10 }\n'
        '[models."my-image-latest"]\nalias_of = "my-image"\nstatus = "ga"\n'
    )
    reg = load_models(f)
    pro = reg.get("gemini-3-pro-image")
    assert pro is not None and pro.timeout == 600 and pro.image_sizes == ("1K", "2K", "4K")
    alias = reg.get("my-image-latest")
    assert alias is not None and alias.family == "my-image" and alias.status == "ga"
    prices = load_prices(models=reg)
    assert prices.per_image("my-image-latest", "1K") == pytest.approx(0.01)
    assert prices.per_image("my-image", "1K", "flex") == pytest.approx(0.004)
    assert model_spec("my-image") is None  # the built-in registry is untouched
    previous = use_models(f)
    try:
        assert model_spec("my-image") is not None
    finally:
        use_models(previous)


@pytest.mark.parametrize(("content", "message"), [
    ('[models."x"]\nstatus = "ga"\n', 'models.x.aspect_ratios: missing'),
    ('[models."gemini-3-pro-image"]\nstatus = "gone"\n', "models.gemini-3-pro-image.status"),
    ('[models."gemini-3-pro-image"]\nretired = "2026-01-01"\n', "expected a date"),
    ('[models."gemini-3-pro-image"]\ncolour = 1\n', "colour: unknown key"),
    ('[models."y"]\nalias_of = "nope"\nstatus = "ga"\n', "alias_of: unknown model 'nope'"),
    ('[models."gemini-3-pro-image"]\nimage_sizes = ["8K"]\n', "no token count for size"),
    ('[tiers]\nflex = -1\n', "tiers.flex: expected a number"),
    ("[models\n", "invalid TOML"),
])
def test_bad_override_file_names_file_and_key(tmp_path: Path, content: str, message: str
                                               ) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_models(f)
    assert str(f) in str(info.value) and message in str(info.value)


async def test_retired_name_warns_once_and_is_sent(caplog: pytest.LogCaptureFixture) -> None:
    async with MockServer() as server:
        async with cometgen.AsyncClient(api_key="k", base_url=server.url) as client:
            with caplog.at_level(logging.WARNING, logger="cometgen"):
                for _ in range(2):
                    await client.generate("a fox", model="gemini-2.5-flash-image")
                await client.generate("a fox", model="gemini-3.1-flash-image")
        assert [r.model for r in server.stats.log] == ["gemini-2.5-flash-image"] * 2 + [
            "gemini-3.1-flash-image"]
    warnings = [r.getMessage() for r in caplog.records if "retired" in r.getMessage()]
    assert warnings == ["model gemini-2.5-flash-image is retired on Google's endpoint since "
                        "2026-10-02; sending it anyway: the endpoint decides"]


def test_cli_models_json() -> None:
    proc = run_cli("models", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == set(KNOWN_MODELS)
    flash = rows["gemini-3.1-flash-image"]
    assert flash["price_per_image_usd"]["standard"]["1K"] == pytest.approx(0.0672)
    assert flash["price_per_image_usd"]["flex"]["4K"] == pytest.approx(0.0756)
    assert rows["gemini-2.5-flash-image"]["status"] == "retired"
    text = run_cli("models")
    assert text.returncode == 0 and "gemini-3-pro-image-preview  retired 2026-06-25" in text.stdout


def test_cli_models_refresh_against_the_mock(mock: ThreadedMockServer, tmp_path: Path) -> None:
    proc = run_cli("models", "--refresh", "--json", "--base-url", mock.url,
                   XDG_CACHE_HOME=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)["refresh"]
    # The mock lists what is not retired, plus a new image model and a text model.
    assert "gemini-2.5-flash-image" in report["not_listed"]
    assert "gemini-3.1-flash-image" not in report["not_listed"]
    assert report["unknown_image_models"] == ["gemini-nano-banana-2.1"]
    cached = json.loads((tmp_path / "cometgen" / "catalogue.json").read_text())
    assert cached["url"] == mock.url + "/api/models" and cached["fetched_at"]
    assert any(m["id"] == "gpt-5-mini" for m in cached["models"])
    text = run_cli("models", "--refresh", "--base-url", mock.url, XDG_CACHE_HOME=str(tmp_path))
    assert "listed image models the registry does not know: gemini-nano-banana-2.1" in text.stdout


def test_cli_models_refresh_unreachable(tmp_path: Path) -> None:
    proc = run_cli("models", "--refresh", "--base-url", "http://127.0.0.1:9",
                   XDG_CACHE_HOME=str(tmp_path))
    assert proc.returncode == 2 and "cannot fetch the model catalogue" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_run_with_models_file(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        '[models."house-image-1"]\nstatus = "preview"\naspect_ratios = ["1:1", "3:2"]\n'
        'image_sizes = ["1K"]\ndefault_image_size = "1K"\nimage_tokens = { "1K" = 1000 }\n'
        'mime_type = "image/jpeg"\n'
        'prices = { input_per_m = 0, text_output_per_m = 0, image_output_per_m = 100 }\n'
    )
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"prompt": "a kiln", "aspect_ratio": "3:2"}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a kiln", "aspect_ratio": "16:9"}\n')
    # Without the file the model is unknown (passes through) and the mock has no such model.
    plain = run_cli("run", str(inp), "-o", str(tmp_path / "plain"), "--model", "house-image-1",
                    "--json", "-q", "--max-attempts", "1")
    assert json.loads(plain.stdout)["stop_reason"] == "model"  # 404: the run halts
    # With it, cometgen validates by it and the built-in mock serves it.
    proc = run_cli("run", str(inp), "-o", str(tmp_path / "out"), "--model", "house-image-1",
                   "--models", str(models), "--json", "-q")
    summary = json.loads(proc.stdout)
    assert summary["done"] == 1 and summary["cost_usd"] == pytest.approx(0.1, rel=0.01)
    dry = run_cli("run", str(bad), "-o", str(tmp_path / "dry"), "--model", "house-image-1",
                  "--models", str(models), "--dry-run")
    assert dry.returncode == 2 and "'16:9' is not supported by house-image-1" in dry.stderr
