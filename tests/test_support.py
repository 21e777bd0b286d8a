"""The test helpers themselves: `wait_until`, and when a missing broker fails instead of skipping."""

from __future__ import annotations

import itertools

import pytest

from tests.support import availability
from tests.support.waiting import WaitTimeout, wait_until


def test_wait_until_returns_the_first_truthy_value() -> None:
    calls = itertools.count(1)
    assert wait_until(lambda: [n] if (n := next(calls)) >= 3 else [], 5, "the third call", interval=0) == [3]


def test_wait_until_names_what_it_awaited_and_the_last_value_seen() -> None:
    with pytest.raises(WaitTimeout, match=r"after 0.2s waiting for a delivery \(last: \[\]\)"):
        wait_until(list, 0.2, "a delivery", interval=0.05)


def test_wait_until_counts_ignored_errors_as_not_yet() -> None:
    answers = iter([ConnectionError("refused"), ConnectionError("refused"), "ready"])

    def service() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_until(service, 5, "the service", interval=0, ignore=(ConnectionError,)) == "ready"


@pytest.mark.parametrize(("in_ci", "brokers_up"), [(True, False), (False, True)])
def test_a_missing_broker_fails_under_ci_or_with_brokers_up(monkeypatch: pytest.MonkeyPatch, in_ci: bool,
                                                             brokers_up: bool) -> None:
    monkeypatch.setattr(availability, "IN_CI", in_ci)
    monkeypatch.setattr(availability, "brokers_up", lambda: brokers_up)
    with pytest.raises(pytest.fail.Exception, match="Kafka is not available"):
        availability.unavailable("Kafka", "no metadata")


def test_a_run_without_any_broker_skips_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(availability, "IN_CI", False)
    monkeypatch.setattr(availability, "brokers_up", lambda: False)
    with pytest.raises(pytest.skip.Exception, match="no broker is running"):
        availability.unavailable("Kafka", "no metadata")

