"""Every paid image delivered exactly once, with real processes and real faults.

Each scenario of the fault suite (`tests/faults/scenarios.py`), small: a few
/edit commands from several members against `bot.py` and the WaveSpeed simulator, each a
process of its own, with short timings. `benchmarks/fault_suite.py` runs the same scenarios
at full size (`make faults`).

Over every scenario: nothing lost, nothing paid but undelivered, nothing billed twice, nothing
posted twice, no truncated image posted; every SIGTERM ends the bot with 0 within 10 s; no
traceback; nothing real Discord would refuse. Every command ends delivered or with a ❌ the
scenario explains (the stuck image; a submit a SIGKILL cut off before it reached WaveSpeed).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.jobs import NOTHING_MADE_MESSAGE, STUCK_MESSAGE
from tests.faults.harness import STUCK_TRIGGER, ScenarioResult, run_scenario
from tests.faults.scenarios import QUICK, SCENARIOS, Scenario

COMMANDS = 4

# The ❌ a member may read in each scenario; any other error is a failure.
ALLOWED_ERRORS: dict[str, str] = {
    "stuck": STUCK_MESSAGE,
    # Killed after its job was marked SUBMITTING but before the POST reached WaveSpeed: nothing
    # was made, and after the reconcile window the member is told so, with a Retry button.
    # (That the POST never arrived is checked too: a prediction made for it would count as
    # paid but undelivered.) A result post frees no slot, but its job's success did, so the
    # next job is often being submitted just as the post a SIGKILL lands on is made.
    "sigkill-submit": NOTHING_MADE_MESSAGE,
    "sigkill-delivery": NOTHING_MADE_MESSAGE,
}
# What must have happened for the scenario to have tested anything.
SIMULATOR_FAULTS = {
    "wavespeed-503": {"unavailable@submit", "unavailable@result"},
    "drops-malformed": {
        "drop@result",
        "malformed@result",
        "drop@download",
        "malformed@download",
    },
    "truncated": {"truncated@download"},
}
SIGKILLS = {"sigkill-delivery": 1, "sigkill-submit": 1}
# The final stop is a SIGTERM in every scenario; the sigterm ones add one mid-batch.
SIGTERMS = {"sigterm-batch": 2, "sigterm-grace": 2}
# Jobs a mid-batch SIGTERM left SUBMITTING: none when the submit POST in flight could finish
# within the grace (its answer was recorded), some when it was cut off past the grace.
SUBMITTING_AFTER_SIGTERM = {"sigterm-batch": range(0, 1), "sigterm-grace": range(1, 100)}


def check(scenario: Scenario, result: ScenarioResult) -> None:
    report = result.describe()
    assert result.failures == [], report
    assert result.delivered + result.clear_errors == result.commands, report
    allowed = ALLOWED_ERRORS.get(scenario.name)
    for prompt, error in result.errors.items():
        assert allowed is not None and error.startswith(f"❌ {allowed}"), report
        if scenario.stuck:
            assert STUCK_TRIGGER in prompt, report
    if scenario.stuck:
        # The stuck image ends in a clear error; everyone else's images are delivered.
        assert (result.delivered, result.clear_errors) == (result.commands - 1, 1), report
    wanted = SIMULATOR_FAULTS.get(scenario.name, set())
    # At least one of the scenario's simulator faults hit a request.
    assert not wanted or wanted & set(result.fault_hits), report
    assert result.sigkills == SIGKILLS.get(scenario.name, 0), report
    assert len(result.sigterms) == SIGTERMS.get(scenario.name, 1), report
    if scenario.name in SUBMITTING_AFTER_SIGTERM:
        submitting = result.facts["submitting after SIGTERM"]
        assert submitting in SUBMITTING_AFTER_SIGTERM[scenario.name], report


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_every_paid_image_is_delivered_exactly_once(
    scenario: Scenario, tmp_path: Path
) -> None:
    result = await run_scenario(scenario, commands=COMMANDS, timing=QUICK, workdir=tmp_path)
    check(scenario, result)
