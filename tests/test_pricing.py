from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import msgspec
import pytest

from cometgen._bulk._pricing import ModelPrice, PriceTable, load_prices
from cometgen._exceptions import ConfigError
from cometgen._models import KNOWN_MODELS
from cometgen._wire import UsageMetadata

FLASH = "gemini-3.1-flash-image-preview"
PRO = "gemini-3-pro-image-preview"
OLD = "gemini-2.5-flash-image"
RECORDED = Path(__file__).parent / "fixtures" / "recorded"


def test_builtin_table_has_the_documented_list_prices() -> None:
    table = load_prices()
    assert table.price(OLD) == ModelPrice(0.30, 2.50, 30.00)
    assert table.price(PRO) == table.price("gemini-3-pro-image") == ModelPrice(2.0, 12.0, 120.0)
    assert table.price(FLASH) == table.price("models/gemini-3.1-flash-image") == ModelPrice(
        0.50, 3.00, 60.00)
    assert all(table.price(m) is not None for m in KNOWN_MODELS)
    assert table.price("gemini-9-ultra") is None
    assert load_prices() is load_prices()  # parsed once


def test_registry_names_its_price_source_and_date() -> None:
    text = resources.files("cometgen").joinpath("models.toml").read_text()
    assert "https://ai.google.dev/gemini-api/docs/pricing" in text and "2026-11" in text
    assert set(tomllib.loads(text)) == {"models", "tiers"}


def test_cost_arithmetic() -> None:
    table = load_prices()
    one = table.cost(FLASH, prompt_tokens=0, output_text_tokens=0, thought_tokens=0,
                     image_tokens=1120)
    assert one == pytest.approx(0.0672)
    assert table.cost(PRO, prompt_tokens=0, output_text_tokens=0, thought_tokens=0,
                      image_tokens=2000) == pytest.approx(0.24)
    # thinking is billed at the text output rate
    assert table.cost(PRO, prompt_tokens=1_000_000, output_text_tokens=500_000,
                      thought_tokens=500_000, image_tokens=0) == pytest.approx(2.0 + 12.0)
    assert table.cost("unknown-model", prompt_tokens=1, output_text_tokens=1, thought_tokens=1,
                      image_tokens=1) is None


def test_cost_from_real_usage_metadata() -> None:
    recorded = RECORDED / "gemini-3-pro-image-preview_google-search-grounding.json"
    raw = json.loads(recorded.read_text())["response"]["usageMetadata"]
    usage = msgspec.convert(raw, UsageMetadata)
    # 1780 candidate tokens = 1120 image + 660 text; 529 thinking tokens; 33 prompt tokens
    expected = (33 * 2.0 + (660 + 529) * 12.0 + 1120 * 120.0) / 1e6
    assert load_prices().cost_from_usage(PRO, usage) == pytest.approx(expected)


@dataclass
class FakeUsage:
    prompt_token_count: int | None = 10
    candidates_token_count: int | None = 1200
    thoughts_token_count: int | None = None
    images: int | None = 1120

    def image_tokens(self) -> int | None:
        return self.images


def test_cost_from_duck_typed_usage() -> None:
    table = load_prices()
    assert table.cost_from_usage(FLASH, FakeUsage()) == pytest.approx(
        (10 * 0.5 + 80 * 3.0 + 1120 * 60.0) / 1e6)
    # without an image split, all candidate tokens are priced as image tokens (upper bound)
    assert table.cost_from_usage(FLASH, FakeUsage(images=None)) == pytest.approx(
        (10 * 0.5 + 1200 * 60.0) / 1e6)
    assert table.cost_from_usage(FLASH, FakeUsage(prompt_token_count=None,
                                                  candidates_token_count=None)) == 0.0
    assert table.cost_from_usage(FLASH, None) is None
    assert table.cost_from_usage("unknown-model", FakeUsage()) is None


def test_projected_cost() -> None:
    table = load_prices()
    flash = table.projected_cost(FLASH, image_size=None, prompt_chars=400)
    assert flash == pytest.approx((100 * 0.5 + 100 * 3.0 + 1120 * 60.0) / 1e6)
    assert flash == pytest.approx(0.0672, abs=0.001)
    pro_4k = table.projected_cost(PRO, image_size="4K", prompt_chars=401, n_reference_images=2)
    assert pro_4k == pytest.approx(((101 + 2 * 1120) * 2.0 + 300 * 12.0 + 2000 * 120.0) / 1e6)
    old = table.projected_cost(OLD, image_size=None, prompt_chars=0, n_reference_images=1)
    assert old == pytest.approx((258 * 0.3 + 100 * 2.5 + 1290 * 30.0) / 1e6)
    assert table.projected_cost("unknown-model", image_size=None, prompt_chars=10) is None
    assert table.projected_cost(FLASH, image_size="8K", prompt_chars=10) is None


def test_override_file_overrides_and_adds(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models."gemini-3.1-flash-image"]\nimage_output_per_m = 30\n\n'
        '[models."gemini-3-pro-image-preview"]\ninput_per_m = 1.5\n\n'
        '[models.my-model]\ninput_per_m = 1\ntext_output_per_m = 2\nimage_output_per_m = 3\n'
    )
    table = load_prices(path)
    assert table.price(FLASH) == ModelPrice(0.5, 3.0, 30.0)
    assert table.cost(FLASH, prompt_tokens=0, output_text_tokens=0, thought_tokens=0,
                      image_tokens=1120) == pytest.approx(0.0336)
    assert table.price(PRO) == ModelPrice(1.5, 12.0, 120.0)  # exact name beats family
    assert table.price("gemini-3-pro-image") == ModelPrice(2.0, 12.0, 120.0)
    assert table.price("my-model") == ModelPrice(1.0, 2.0, 3.0)
    assert table.price(OLD) == load_prices().price(OLD)
    assert load_prices().price(FLASH) == ModelPrice(0.5, 3.0, 60.0)  # built-in untouched


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[models", "invalid TOML: "),
        ("currency = 'EUR'\n", "currency: unknown key (expected [models.\"<name>\"] tables)"),
        ("models = 3\n", "models: expected a table"),
        ("[models]\nfoo = 1\n", "models.foo: expected a table of prices"),
        ('[models."gemini-3-pro-image"]\nimage_per_m = 1\n',
         'models.gemini-3-pro-image.image_per_m: unknown key (expected one of input_per_m, '
         "text_output_per_m, image_output_per_m)"),
        ('[models."gemini-3-pro-image"]\ninput_per_m = "2.0"\n',
         "models.gemini-3-pro-image.input_per_m: expected a number >= 0 (dollars per million "
         "tokens), got '2.0'"),
        ('[models."gemini-3-pro-image"]\ninput_per_m = -1\n',
         "models.gemini-3-pro-image.input_per_m: expected a number >= 0"),
        ('[models."gemini-3-pro-image"]\ninput_per_m = nan\n',
         "models.gemini-3-pro-image.input_per_m: expected a number >= 0"),
        ('[models."gemini-3-pro-image"]\ninput_per_m = true\n',
         "models.gemini-3-pro-image.input_per_m: expected a number >= 0"),
        ('[models."new.model"]\ninput_per_m = 1\n',
         'models."new.model".text_output_per_m: missing (required for a model without a '
         "built-in price)"),
    ],
)
def test_bad_override_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_prices(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_missing_override_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read price file: No such file"):
        load_prices(tmp_path / "nope.toml")


def test_price_table_is_read_only() -> None:
    source = {"m": ModelPrice(1, 2, 3)}
    table = PriceTable(source)
    source["m"] = ModelPrice(9, 9, 9)
    assert table.price("m") == ModelPrice(1, 2, 3)
    with pytest.raises(TypeError):
        table.prices["x"] = ModelPrice(0, 0, 0)  # type: ignore[index]
