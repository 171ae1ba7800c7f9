"""Service tiers: the ``serviceTier`` field on the wire, prices by tier, and Flex shedding
(the mock sheds, the run counts shed items apart)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

import cometgen
from cometgen import _wire as wire
from cometgen._bulk._batch import Batch
from cometgen._bulk._job import Job
from cometgen._bulk._pricing import load_prices
from cometgen._exceptions import ConfigError, InputError
from cometgen._request import build_request
from cometgen._retry import RetryPolicy
from cometgen.testing import MockServer
from tests._cli import run_cli

pytestmark = pytest.mark.anyio
FLASH = "gemini-3.1-flash-image"


def _body(tier: str | None) -> dict[str, object]:
    request = build_request([wire.Content(role="user", parts=[wire.Part(text="x")])],
                            service_tier=tier)
    decoded: dict[str, object] = msgspec.json.decode(wire.encode_request(request))
    return decoded


def test_service_tier_is_a_top_level_field() -> None:
    assert _body("flex")["serviceTier"] == "flex"
    assert _body("priority")["serviceTier"] == "priority"
    # standard is the default tier: the body stays what it was before tiers existed
    assert "serviceTier" not in _body("standard") and "serviceTier" not in _body(None)


def test_bad_tier_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="service_tier must be one of standard, flex"):
        cometgen.AsyncClient(api_key="k", service_tier="cheap")  # type: ignore[arg-type]
    with pytest.raises(InputError) as info:
        Job(prompt="p", service_tier="cheap")  # type: ignore[arg-type]
    assert info.value.field == "service_tier"


def test_prices_follow_the_tier() -> None:
    prices = load_prices()
    std = prices.projected_cost(FLASH, image_size="1K", prompt_chars=40)
    flex = prices.projected_cost(FLASH, image_size="1K", prompt_chars=40, tier="flex")
    prio = prices.projected_cost(FLASH, image_size="1K", prompt_chars=40, tier="priority")
    assert std is not None and flex == pytest.approx(std / 2) and prio == pytest.approx(std * 2)

    class Usage:
        prompt_token_count = 0
        candidates_token_count = 1120
        service_tier = "flex"

        def image_tokens(self) -> int:
            return 1120

    # the tier the answer names wins over the one asked for
    assert prices.cost_from_usage(FLASH, Usage(), "standard") == pytest.approx(0.0336)


async def test_client_sends_the_tier_and_the_mock_echoes_it() -> None:
    async with MockServer() as server:
        async with cometgen.AsyncClient(api_key="k", base_url=server.url, model=FLASH,
                                        service_tier="flex") as client:
            result = await client.generate("a lighthouse")
            assert result.response.usage_metadata is not None
            assert result.response.usage_metadata.service_tier == "flex"
            standard = await client.with_options(service_tier="standard").generate("a pier")
            assert standard.response.usage_metadata is not None
            assert standard.response.usage_metadata.service_tier == "standard"
            per_call = await client.generate("a dune", service_tier="priority")
            assert per_call.response.usage_metadata is not None
            assert per_call.response.usage_metadata.service_tier == "priority"


async def test_batch_flex_costs_half_and_jobs_may_choose_their_tier(tmp_path: Path) -> None:
    async with MockServer() as server:
        async with cometgen.AsyncClient(api_key="k", base_url=server.url, model=FLASH) as client:
            async with Batch(client, out_dir=tmp_path / "flex", service_tier="flex") as batch:
                stats = await batch.run_all([Job(prompt="a", id="a"),
                                             Job(prompt="b", id="b", service_tier="standard")])
    lines = [json.loads(x) for x in (tmp_path / "flex" / "manifest.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in lines}
    assert stats.done == 2 and stats.shed == 0
    assert by_id["a"]["cost"] == pytest.approx(by_id["b"]["cost"] / 2, rel=0.05)


async def test_shed_flex_requests_are_counted_apart(tmp_path: Path) -> None:
    async with MockServer(flex_shed_rate=1.0) as server:
        async with cometgen.AsyncClient(api_key="k", base_url=server.url, model=FLASH,
                                        retry=RetryPolicy(max_attempts=2)) as client:
            async with Batch(client, out_dir=tmp_path / "o", service_tier="flex") as batch:
                stats = await batch.run_all(
                    [Job(prompt=f"p{i}", id=f"f{i}") for i in range(3)]
                    + [Job(prompt="s", id="s", service_tier="standard")]
                )
        assert server.stats.shed == 6  # 3 items x 2 attempts; standard is never shed
        assert server.stats.billed_total == 1
    assert stats.failed == 3 and stats.shed == 3 and stats.done == 1
    assert stats.as_dict()["shed"] == 3


def test_cli_service_tier_flex_halves_the_cost(tmp_path: Path) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text("a red kite\na blue kite\n")
    costs = {}
    for tier in ("standard", "flex"):
        proc = run_cli("run", str(inp), "-o", str(tmp_path / tier), "--model", FLASH,
                       "--service-tier", tier, "--json", "-q")
        assert proc.returncode == 0, proc.stderr
        costs[tier] = json.loads(proc.stdout)["cost_usd"]
    assert costs["flex"] == pytest.approx(costs["standard"] / 2, rel=0.05)
    dry = run_cli("run", str(inp), "-o", str(tmp_path / "d"), "--model", FLASH,
                  "--service-tier", "flex", "--dry-run", "--json")
    assert json.loads(dry.stdout)["projected_cost_usd"] == pytest.approx(0.07, abs=0.01)
