"""Dry runs, runs and the policy's refusals."""

from __future__ import annotations

import pytest
from conftest import DISTRICT_SQL, Service

from unseen_client import Client, DryRun, Outcome, Refused


def test_a_dry_run_costs_the_query_without_spending(dev: Client, service: Service) -> None:
    before = dev.budget(service.grant).epsilon_spent
    verdict = dev.dry_run(service.grant, "SELECT gender, AVG(household_size) FROM residents GROUP BY gender")
    assert isinstance(verdict, DryRun)
    assert verdict.admitted and verdict.rule is None and verdict.reason is None
    assert verdict.epsilon == 1.0 and verdict.confidence == 0.95
    assert {name for name, _ in verdict.accuracy} >= {"count(*)"}
    assert all(half_width > 0 for _, half_width in verdict.accuracy)
    assert verdict.raise_if_refused() is verdict
    assert dev.budget(service.grant).epsilon_spent == before


def test_a_query_runs_spends_and_quarantines_its_output(dev: Client, service: Service) -> None:
    sql = "SELECT gender, SUM(household_size) AS people FROM residents GROUP BY gender"
    before = dev.budget(service.grant).epsilon_spent
    assert dev.dry_run(service.grant, sql).epsilon == 1.0
    outcome = dev.query(service.grant, sql)
    assert isinstance(outcome, Outcome)
    assert outcome.status == "finished" and outcome.reason is None
    assert outcome.epsilon_spent == 1.0
    assert outcome.output is not None and outcome.output.startswith("out-")
    assert dev.budget(service.grant).epsilon_spent == pytest.approx(before + 1.0)
    # The same measurement again is the cached release: nothing spent.
    again = dev.query(service.grant, sql)
    assert again.epsilon_spent == 0.0
    assert dev.dry_run(service.grant, sql).cached


def test_a_prohibited_column_is_refused_with_its_rule_and_column(dev: Client, service: Service) -> None:
    with pytest.raises(Refused) as caught:
        dev.query(service.grant, "SELECT id_number FROM residents")
    refusal = caught.value
    assert refusal.rule == "prohibited-column"
    assert refusal.column == "residents.id_number"
    assert refusal.job is not None and refusal.job.startswith("job-")
    assert "prohibited" in refusal.reason
    assert "rule: prohibited-column" in str(refusal) and "residents.id_number" in str(refusal)
    # The refused run is the developer's own job, shown refused.
    assert dev.job(refusal.job).status == "refused"


def test_a_raw_conditional_value_is_refused(dev: Client, service: Service) -> None:
    with pytest.raises(Refused) as caught:
        dev.query(service.grant, "SELECT annual_income FROM residents")
    assert (caught.value.rule, caught.value.column) == ("conditional-raw", "residents.annual_income")


def test_a_refusal_without_a_column_names_only_its_rule(dev: Client, service: Service) -> None:
    with pytest.raises(Refused) as caught:
        dev.query(service.grant, "SELEC district FROM residents")
    assert caught.value.rule == "sql-error"
    assert caught.value.column is None


def test_a_dry_run_tells_the_refusal_before_any_run(dev: Client, service: Service) -> None:
    verdict = dev.dry_run(service.grant, "SELECT phone FROM residents")
    assert not verdict.admitted and verdict.epsilon == 0.0
    assert (verdict.rule, verdict.column) == ("prohibited-column", "residents.phone")
    with pytest.raises(Refused) as caught:
        verdict.raise_if_refused()
    assert caught.value.rule == "prohibited-column"


def test_refusals_can_be_left_unexplained(service: Service) -> None:
    plain = service.client("dev")
    plain.explain_refusals = False
    with pytest.raises(Refused) as caught:
        plain.query(service.grant, "SELECT name FROM residents")
    # Without the dry run only what the answer says: the column it names.
    assert caught.value.rule is None
    assert caught.value.column == "residents.name"


def test_the_district_query_is_admitted(dev: Client, service: Service) -> None:
    verdict = dev.dry_run(service.grant, DISTRICT_SQL)
    assert verdict.admitted


def test_open_columns_are_answered_exactly_without_spending(dev: Client, service: Service) -> None:
    sql = "SELECT gender, COUNT(*) AS n FROM residents GROUP BY gender"
    verdict = dev.dry_run(service.grant, sql)
    assert verdict.admitted and verdict.epsilon == 0.0 and verdict.accuracy == ()
    assert dev.query(service.grant, sql).epsilon_spent == 0.0
