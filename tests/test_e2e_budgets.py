"""End-to-end: budgets. Every job is priced and held before it is queued; one that does not fit
is refused with what is left and when it resets, and nothing is billed for it. A failed or
cancelled job gives its hold back."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from services.simulator import Fault
from tests.e2e import against, is_step, says, shared_simulator, starts
from tests.images import make_png
from tests.local_discord import LocalDiscord, RunningBot, start_bot

pytest_plugins = ("tests.local_discord.fixtures",)

RESETS = r"it resets at 00:00 UTC \(in \d+ (h|min)\)\."


async def test_a_server_budget_allows_two_pro_edits_and_refuses_the_third(
    local_discord: LocalDiscord, store_location: str
) -> None:
    # On both engines: a SQLite file, and a PostgreSQL database.
    async with shared_simulator(latency_s=0.5) as sim:
        overrides = against(
            sim, budget={"server_daily_usd": "0.10"}, storage={"database": store_location}
        )
        async with start_bot(local_discord, settings_overrides=overrides) as (alice, _):
            # A job that fails at the image service gives its $0.04 back.
            sim.inject(Fault.TASK_FAILED)
            failed = await alice.slash("edit", image=make_png(), prompt="fails")
            await failed.response(starts("❌"), timeout=10)

            # A job cancelled while it waits gives its $0.04 back too.
            first = await alice.slash("edit", image=make_png(), prompt="one")
            await first.response(starts("🧰", "🎨"), timeout=10)
            waiting = await alice.slash("edit", image=make_png(), prompt="cancelled")
            status = await waiting.response(says("⏳ Queued: you're next."), timeout=10)
            await alice.click(status, "Cancel")
            await waiting.response(starts("🚫"), timeout=10)
            await alice.wait_for_message(is_step("Step 1", "one"), timeout=10)

            # Had either hold been kept, this second edit would not fit.
            second = await alice.slash("edit", image=make_png(), prompt="two")
            await second.response(starts("✅"), timeout=10)
            third = await alice.slash("edit", image=make_png(), prompt="three")
            refused = await third.response(starts("❌"), timeout=10)
            assert re.fullmatch(
                r"❌ This server's daily budget of \$0\.10 is used up \(\$0\.02 left, not enough "
                r"for this \$0\.04 request\); " + RESETS,
                refused.content,
            ), refused.content

            usage = await alice.slash("kontext usage")
            answer = await usage.response()
            assert answer.ephemeral
            assert "**Today:** $0.08 spent, 2 images." in answer.content
            assert "This server today: $0.02 left of $0.10." in answer.content
        # Exactly the two edits were billed; the refused one never reached the image service.
        assert sim.billed_total == Decimal("0.08")
        assert [p.request["prompt"] for p in sim.predictions.values()] == ["fails", "one", "two"]


@pytest.mark.parametrize(
    "bot_settings_overrides",
    [{"simulator": {"latency_s": 0.1}, "budget": {"member_daily_images": 3}}],
)
async def test_a_members_daily_image_cap_counts_every_image(
    running_bot: RunningBot, local_discord: LocalDiscord
) -> None:
    alice, _ = running_bot
    made = await alice.slash("imagine", prompt="a lighthouse at dusk", count=2)
    await made.response(starts("✅"), timeout=10)
    # Two more would make four: refused, before anything is made.
    more = await alice.slash("imagine", prompt="a harbour at dawn", count=2)
    refused = await more.response(starts("❌"), timeout=10)
    assert re.fullmatch(
        r"❌ Your daily limit of 3 images here is used up \(1 left, not enough for 2 images\); "
        + RESETS,
        refused.content,
    ), refused.content
    # Another member's images are their own.
    bob = alice.stranger
    theirs = await bob.slash("imagine", prompt="a harbour at dawn", count=2)
    await theirs.response(starts("✅"), timeout=10)

    # Each member's history lists their own results, with links to them, privately.
    listed = await (await alice.slash("kontext history")).response()
    assert listed.ephemeral
    (line,) = listed.content.splitlines()
    (result,) = [m for m in alice.messages(local_discord.general) if is_step("Step 1")(m)][:1]
    assert "a lighthouse at dusk" in line
    assert line.endswith(f"/channels/{local_discord.guild.id}/{result.channel_id}/{result.id}"), (
        line
    )
    nothing = await (await alice.stranger.slash("kontext history")).response()
    assert "harbour" in nothing.content and "lighthouse" not in nothing.content


async def test_history_says_so_when_there_is_nothing_yet(running_bot: RunningBot) -> None:
    alice, _ = running_bot
    answer = await (await alice.slash("kontext history")).response()
    assert answer.ephemeral
    assert answer.content == "You have no results here yet: try `/edit` or `/imagine`."


@pytest.mark.parametrize(
    "bot_settings_overrides", [{"budget": {"member_daily_usd": "0.05", "server_daily_usd": "1"}}]
)
async def test_a_members_daily_budget_is_their_own(running_bot: RunningBot) -> None:
    alice, _ = running_bot
    first = await alice.slash("edit", image=make_png(), prompt="make it blue")
    await first.response(starts("✅"), timeout=10)
    second = await alice.slash("edit", image=make_png(), prompt="make it red")
    refused = await second.response(starts("❌"), timeout=10)
    assert refused.ephemeral
    assert re.fullmatch(
        r"❌ Your daily budget of \$0\.05 here is used up \(\$0\.01 left, not enough for this "
        r"\$0\.04 request\); " + RESETS,
        refused.content,
    ), refused.content
    # Bob's budget is his own, and the server's has room for him.
    theirs = await alice.stranger.slash("edit", image=make_png(), prompt="make it green")
    await theirs.response(starts("✅"), timeout=10)
