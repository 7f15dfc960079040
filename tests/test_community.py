"""A server's rules: stored changes over the config's defaults, and the one check every job
passes (bans, channels, roles, models, words, safety, cooldown), against a real store."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from services.budget import BudgetExceededError, Budgets
from services.community import (
    BannedError,
    Community,
    CooldownError,
    RefusedHereError,
    Spent,
    blocked_word_in,
    parse_count,
    parse_models,
    parse_usd,
)
from services.origin import Origin
from services.rules import BudgetSettings, DefaultRules, NsfwPolicy, ServerRules
from services.settings import load_settings
from services.storage import Repository
from services.wavespeed import InvalidInputError, KontextRequest, ModelSpec, model_for_path
from services.wavespeed.catalog import Family, ModelKind, validate_request

GUILD, CHANNEL, THREAD, OTHER_CHANNEL = 500, 10, 11, 12
ALICE, BOB, ADMIN = 1, 2, 3
ARTISTS = 77
PRO = model_for_path("flux-kontext-pro/text-to-image")
MAX = model_for_path("flux-kontext-max/text-to-image")


class Clock:
    def __init__(self) -> None:
        self.now = 1_780_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def repository(store_location: str) -> AsyncIterator[Repository]:
    repository = await Repository.open(store_location)
    yield repository
    await repository.close()


def community_on(repository: Repository, clock: Clock, **defaults: Any) -> Community:
    budget = {k: v for k, v in defaults.items() if k in BudgetSettings.model_fields}
    rest = {k: v for k, v in defaults.items() if k not in budget}
    rules = ServerRules.defaults(DefaultRules(**rest), BudgetSettings(**budget))
    return Community(repository, rules, Budgets(repository, clock), clock)


def origin(member: int = ALICE, **values: Any) -> Origin:
    return Origin(member_id=member, channel_id=CHANNEL, guild_id=GUILD, **values)


def request(spec: ModelSpec = PRO, prompt: str = "a red fox", **options: Any) -> KontextRequest:
    return validate_request(spec, {"prompt": prompt, **options})


async def store(repository: Repository, spec: ModelSpec, admitted: Any, member: int = ALICE) -> int:
    job = await repository.create_job(
        hold=admitted.hold,
        action="imagine",
        requester_id=member,
        guild_id=GUILD,
        channel_id=CHANNEL,
        model_path=spec.path,
        params={"prompt": "p"},
        prompt="p",
    )
    return job.id


# --- Rules: defaults, changes, persistence ------------------------------------------------------


async def test_a_servers_changes_are_kept_over_the_defaults_and_survive_a_restart(
    store_location: str,
) -> None:
    path = store_location
    clock = Clock()
    repository = await Repository.open(path)
    try:
        community = community_on(repository, clock, member_daily_usd=Decimal("1"))
        await community.change(GUILD, ADMIN, models=["pro", "dev"], cooldown_s=30)
        await community.change(GUILD, ADMIN, member_daily_usd="0.25", channels=[CHANNEL])
    finally:
        await repository.close()

    repository = await Repository.open(path)
    try:
        # The config's default for something the server never changed moves with the config.
        community = community_on(repository, clock, member_daily_usd="2", nsfw="withhold")
        rules = await community.rules(GUILD)
        assert rules.models == (Family.PRO, Family.DEV) and rules.cooldown_s == 30
        assert rules.member_daily_usd == Decimal("0.25") and rules.channels == (CHANNEL,)
        assert rules.nsfw is NsfwPolicy.WITHHOLD
        # Another server has the defaults; a reset puts a field back to them.
        assert (await community.rules(GUILD + 1)).member_daily_usd == Decimal("2")
        rules = await community.reset(GUILD, ADMIN, ["member_daily_usd", "channels"])
        assert rules.member_daily_usd == Decimal("2") and rules.channels == ()
        assert rules.cooldown_s == 30
    finally:
        await repository.close()


async def test_a_change_that_does_not_hold_together_is_refused_and_nothing_is_stored(
    repository: Repository,
) -> None:
    community = community_on(repository, Clock())
    with pytest.raises(InvalidInputError, match="default model"):
        await community.change(GUILD, ADMIN, models=["max"])
    with pytest.raises(InvalidInputError, match="safety tolerance"):
        await community.change(GUILD, ADMIN, max_safety_tolerance=9)
    assert await community.rules(GUILD) == community.defaults
    # Together they fit: Max alone, and Max the default.
    rules = await community.change(GUILD, ADMIN, models=["max"], default_model="max")
    assert rules.default_model is Family.MAX


def test_defaults_come_from_the_config_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[discord]\ntoken = "t"\n[defaults]\nmodels = ["pro", "dev"]\n'
        'blocked_words = ["  Bad   Word ", "gore"]\nnsfw = "withhold"\n'
    )
    monkeypatch.setenv("DEFAULTS_COOLDOWN_S", "15")
    defaults = load_settings(path).defaults
    assert defaults.models == (Family.PRO, Family.DEV)
    assert defaults.blocked_words == ("bad word", "gore")
    assert defaults.cooldown_s == 15 and defaults.nsfw is NsfwPolicy.WITHHOLD


# --- The check every job passes -----------------------------------------------------------------


async def test_a_banned_member_is_refused_until_unbanned(repository: Repository) -> None:
    community = community_on(repository, Clock())
    assert await community.ban(GUILD, BOB, ADMIN)
    assert not await community.ban(GUILD, BOB, ADMIN)
    assert await community.banned(GUILD) == [BOB]
    with pytest.raises(BannedError):
        await community.admit(origin(BOB), PRO, request())
    # Only in that server, and only Bob.
    await community.admit(origin(ALICE), PRO, request())
    await community.admit(Origin(member_id=BOB, channel_id=9, guild_id=GUILD + 1), PRO, request())
    assert await community.unban(GUILD, BOB)
    await community.admit(origin(BOB), PRO, request())


async def test_channel_and_role_allow_lists(repository: Repository) -> None:
    community = community_on(repository, Clock())
    await community.change(GUILD, ADMIN, channels=[CHANNEL], roles=[ARTISTS])
    artist = {"role_ids": frozenset({ARTISTS})}
    await community.admit(origin(**artist), PRO, request())
    # A thread counts as its parent channel.
    in_thread = Origin(
        member_id=ALICE, channel_id=THREAD, parent_channel_id=CHANNEL, guild_id=GUILD, **artist
    )
    await community.admit(in_thread, PRO, request())
    elsewhere = Origin(member_id=ALICE, channel_id=OTHER_CHANNEL, guild_id=GUILD, **artist)
    with pytest.raises(RefusedHereError, match=rf"use me in <#{CHANNEL}>"):
        await community.admit(elsewhere, PRO, request())
    with pytest.raises(RefusedHereError, match=rf"one of these roles can use me: <@&{ARTISTS}>"):
        await community.admit(origin(), PRO, request())
    # @everyone (the server's own id) in the list lets everyone in.
    await community.change(GUILD, ADMIN, roles=[ARTISTS, GUILD])
    await community.admit(origin(), PRO, request())


async def test_models_offered_and_the_default(repository: Repository) -> None:
    community = community_on(repository, Clock(), models=["pro", "dev"])
    with pytest.raises(
        RefusedHereError, match=r"Kontext Max isn't available.*Kontext Pro, Kontext Dev"
    ):
        await community.admit(origin(), MAX, request(MAX))
    await community.admit(origin(), PRO, request())


@pytest.mark.parametrize(
    ("prompt", "refused"),
    [
        ("add some GORE to it", True),
        ("make it   bad\nword style", True),
        ("a gorey mess", False),
        ("paint a gorilla", False),
        ("no blocked words here", False),
    ],
)
async def test_blocked_words_are_whole_words_in_any_case_and_spacing(
    repository: Repository, prompt: str, refused: bool
) -> None:
    community = community_on(repository, Clock(), blocked_words=["gore", "bad word"])
    if refused:
        with pytest.raises(RefusedHereError, match="blocked") as caught:
            await community.admit(origin(), PRO, request(prompt=prompt))
        assert "gore" not in str(caught.value).casefold()
    else:
        await community.admit(origin(), PRO, request(prompt=prompt))
    assert blocked_word_in(prompt, ["gore", "bad word"]) is refused


async def test_the_highest_safety_tolerance_is_enforced_and_filled_in(
    repository: Repository,
) -> None:
    community = community_on(repository, Clock(), max_safety_tolerance=1)
    with pytest.raises(RefusedHereError, match=r"at most 1 .*you chose 3"):
        await community.admit(origin(), PRO, request(safety_tolerance=3))
    # Unchosen, WaveSpeed's default (2) would be more than the server allows: 1 is sent.
    admitted = await community.admit(origin(), PRO, request())
    assert admitted.request.model_dump()["safety_tolerance"] == "1"
    lenient = community_on(repository, Clock(), max_safety_tolerance=4)
    admitted = await lenient.admit(origin(), PRO, request())
    assert admitted.request.model_dump().get("safety_tolerance") is None


@pytest.mark.parametrize(
    ("policy", "age_restricted", "shows"),
    [
        ("withhold", True, False),
        ("age-restricted", True, True),
        ("age-restricted", False, False),
        ("everywhere", False, True),
    ],
)
async def test_the_nsfw_policy_decides_whether_flagged_images_show(
    repository: Repository, policy: str, age_restricted: bool, shows: bool
) -> None:
    community = community_on(repository, Clock(), nsfw=policy)
    admitted = await community.admit(origin(age_restricted=age_restricted), PRO, request())
    assert admitted.nsfw_allowed is shows


async def test_a_cooldown_is_checked_as_the_job_is_stored(repository: Repository) -> None:
    clock = Clock()
    community = community_on(repository, clock, cooldown_s=60)
    await store(repository, PRO, await community.admit(origin(), PRO, request()))
    clock.now += 20
    # Two admitted at once: the check runs when each is stored, so the second cannot slip in.
    admitted = await community.admit(origin(), PRO, request())
    with pytest.raises(CooldownError, match=r"wait 40 s: .* wait 60 s between images"):
        await store(repository, PRO, admitted)
    # Another member is not held back by Alice's cooldown.
    await store(repository, PRO, await community.admit(origin(BOB), PRO, request()), member=BOB)
    clock.now += 41
    await store(repository, PRO, await community.admit(origin(), PRO, request()))


async def test_a_servers_budget_override_applies_to_its_jobs(repository: Repository) -> None:
    community = community_on(repository, Clock(), server_daily_usd="10")
    await community.change(GUILD, ADMIN, server_daily_usd="0.05")
    await store(repository, PRO, await community.admit(origin(), PRO, request()))
    with pytest.raises(BudgetExceededError, match=r"daily budget of \$0\.05 is used up"):
        await store(repository, PRO, await community.admit(origin(BOB), PRO, request()), BOB)
    usage = await community.usage(GUILD, ALICE)
    assert "$0.01 left of $0.05" in usage.text()


# --- What admins change, in their own words -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "amount"),
    [("5", Decimal("5")), ("$2.50", Decimal("2.50")), (" 0 ", Decimal("0")), ("None", None)],
)
def test_a_budget_reads_as_dollars_or_no_cap(text: str, amount: Decimal | None) -> None:
    assert parse_usd(text) == amount


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("abc", "'abc' is not an amount in US dollars"),
        ("-1", "A budget cannot be negative"),
        ("nan", "is not an amount"),
        ("0.0000001", "finer than a millionth"),
    ],
)
def test_a_budget_that_does_not_read_says_why(text: str, says: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(says)):
        parse_usd(text)


def test_counts_and_models_read_as_admins_write_them() -> None:
    assert parse_count("25") == 25 and parse_count("none") is None
    with pytest.raises(InvalidInputError, match="whole number"):
        parse_count("-3")
    assert parse_models("Pro, dev  pro") == (Family.PRO, Family.DEV)
    with pytest.raises(InvalidInputError, match="pro, max, dev, dev-ultra-fast"):
        parse_models("pro lora")


async def test_admins_change_models_budgets_and_lists(repository: Repository) -> None:
    community = community_on(repository, Clock(), member_daily_usd="1")
    # The default follows when it is no longer offered.
    rules = await community.change_models(GUILD, ADMIN, "max dev", None)
    assert rules.models == (Family.MAX, Family.DEV) and rules.default_model is Family.MAX
    with pytest.raises(InvalidInputError, match="Kontext Pro is not one of the models offered"):
        await community.change_models(GUILD, ADMIN, None, Family.PRO)

    rules = await community.change_budget(
        GUILD, ADMIN, server_daily_usd="3", member_daily_usd="none", member_daily_images="4"
    )
    assert rules.server_daily_usd == Decimal("3") and rules.member_daily_usd is None
    assert rules.member_daily_images == 4
    with pytest.raises(InvalidInputError):
        await community.change_budget(GUILD, ADMIN, server_daily_usd="1", member_daily_images="x")
    rules = await community.change_budget(GUILD, ADMIN, member_daily_usd="default")
    assert rules.member_daily_usd == Decimal("1") and rules.server_daily_usd == Decimal("3")

    assert await community.add_to(GUILD, ADMIN, "blocked_words", "  Bad   WORD ")
    assert not await community.add_to(GUILD, ADMIN, "blocked_words", "bad word")
    assert await community.add_to(GUILD, ADMIN, "channels", CHANNEL)
    assert (await community.rules(GUILD)).blocked_words == ("bad word",)
    assert await community.remove_from(GUILD, ADMIN, "blocked_words", "BAD word")
    assert not await community.remove_from(GUILD, ADMIN, "channels", OTHER_CHANNEL)
    rules = await community.rules(GUILD)
    assert rules.blocked_words == () and rules.channels == (CHANNEL,)


async def test_server_usage_counts_today_and_this_month_by_member_and_model(
    repository: Repository,
) -> None:
    clock = Clock()
    community = community_on(repository, clock)
    # Yesterday's job counts for the month only; a released hold counts nowhere.
    clock.now -= 86_400
    await store(repository, PRO, await community.admit(origin(ALICE), PRO, request()))
    clock.now += 86_400
    await store(repository, MAX, await community.admit(origin(BOB), MAX, request(MAX)), BOB)
    await store(repository, PRO, await community.admit(origin(ALICE), PRO, request()))

    usage = await community.server_usage(GUILD)
    assert usage.today.total == Spent(120_000, 2, 2)
    assert usage.today.by_member == ((BOB, Spent(80_000, 1, 1)), (ALICE, Spent(40_000, 1, 1)))
    assert usage.today.by_model == (
        ("Kontext Max Text-to-Image", Spent(80_000, 1, 1)),
        ("Kontext Pro Text-to-Image", Spent(40_000, 1, 1)),
    )
    assert usage.month.total == Spent(160_000, 3, 3)
    assert usage.month.by_member == ((ALICE, Spent(80_000, 2, 2)), (BOB, Spent(80_000, 1, 1)))
    assert (await community.server_usage(GUILD + 1)).month.by_member == ()


def test_a_default_that_cannot_do_the_work_falls_back_to_one_offered_that_can() -> None:
    rules = ServerRules(models=(Family.DEV, Family.MAX), default_model=Family.DEV)
    assert rules.default_for(ModelKind.EDIT) is Family.DEV
    # Kontext Dev makes no images from text: /imagine with no model named uses Max.
    assert rules.default_for(ModelKind.TEXT_TO_IMAGE) is Family.MAX
