"""Grant applications: a developer applies, an admin pre-reviews and
decides (narrowing the terms), the approval issues the grant; returned
applications are amended, undecided ones withdrawn, approved ones given
feedback."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import Service

from unseen_client import (
    Application,
    ApplicationStep,
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    GrantRequest,
    Narrowing,
    NotFound,
)


@pytest.fixture
def admin(service: Service) -> Client:
    return service.client("admin")


def _steps(application: Application) -> tuple:
    return tuple(s.step for s in application.history)


def _housing_request(**changes: object) -> GrantRequest:
    request = GrantRequest(
        dataset="residents",
        scenario="elderly care planning",
        purpose="mean income and household size by district",
        epsilon_total=5.0,
        query_epsilon=1.0,
        valid_days=90,
        columns=("district", "birth_year", "household_size", "annual_income"),
        max_runs=50,
        max_downloads=10,
    )
    return replace(request, **changes)


def test_an_approved_application_issues_the_grant_as_narrowed(
    dev: Client, admin: Client, service: Service
) -> None:
    request = _housing_request()
    submitted = dev.apply(request)
    assert isinstance(submitted, Application)
    assert submitted.id.startswith("app-")
    assert (submitted.applicant, submitted.status) == ("dev", "submitted")
    # The terms come back as asked, the applicant as the grant's developer.
    assert submitted.requested == replace(request, developer="dev")
    assert submitted.granted is None and submitted.grant is None and not submitted.decided
    assert _steps(submitted) == ("submitted",)
    first = submitted.history[0]
    assert isinstance(first, ApplicationStep) and first.actor == "dev" and first.rating is None
    assert submitted.submitted_at and submitted.updated_at
    assert submitted.last_notice is None

    # The applicant, the provider and auditors read it.
    assert dev.application(submitted.id) == submitted
    assert submitted.id in {a.id for a in dev.applications()}
    assert submitted.id in {a.id for a in admin.applications()}
    assert service.client("aud").application(submitted.id).applicant == "dev"

    in_review = admin.pre_review_application(submitted.id, True, "complete: columns and scenario named")
    assert in_review.status == "in_review"
    assert _steps(in_review) == ("submitted", "pre_reviewed")
    assert in_review.last_notice is not None and in_review.last_notice.actor == "admin"

    # A narrowing may only narrow.
    with pytest.raises(BadRequest) as widened:
        admin.decide_application(submitted.id, True, "more", narrowing=Narrowing(epsilon_total=50.0))
    assert "only narrow" in widened.value.message
    with pytest.raises(BadRequest):
        admin.decide_application(submitted.id, True, "more", narrowing=Narrowing(columns=("phone",)))
    assert admin.application(submitted.id).status == "in_review"

    narrowing = Narrowing(
        epsilon_total=3.0,
        columns=("district", "household_size", "annual_income"),
        max_runs=20,
        approvals_required=2,
        deny_modules=True,
    )
    reason = "the scenario needs no birth years; SQL only"
    approved = admin.decide_application(submitted.id, True, reason, narrowing=narrowing)
    assert approved.status == "approved" and approved.decided
    assert approved.grant is not None and approved.grant.startswith("grant-")
    assert approved.requested == submitted.requested
    assert approved.granted == replace(
        submitted.requested,
        epsilon_total=3.0,
        columns=("district", "household_size", "annual_income"),
        max_runs=20,
        approvals_required=2,
        allow_modules=False,
    )
    assert approved.history[-1] == ApplicationStep(
        step="approved", actor="admin", at=approved.history[-1].at, reason=reason
    )
    assert approved.last_notice == approved.history[-1]

    # The developer holds the grant, with the terms granted.
    grants = {g.id: g for g in dev.grants()}
    assert approved.grant in grants
    grant = grants[approved.grant]
    assert (grant.dataset, grant.developer) == ("residents", "dev")
    assert (grant.scenario, grant.purpose) == (request.scenario, request.purpose)
    assert (grant.epsilon_total, grant.query_epsilon) == (3.0, 1.0)
    assert grant.columns == ("district", "household_size", "annual_income")
    assert (grant.max_runs, grant.max_downloads, grant.approvals_required) == (20, 10, 2)
    assert grant.allow_sql and not grant.allow_modules
    assert dev.budget(approved.grant).epsilon_left == 3.0

    # Decided: nothing but feedback.
    with pytest.raises(Conflict):
        admin.decide_application(submitted.id, False, "changed my mind")
    with pytest.raises(Conflict):
        dev.withdraw_application(submitted.id, "too late")

    with pytest.raises(BadRequest) as rating:
        dev.application_feedback(submitted.id, 6, "excellent")
    assert "1 (poor) to 5 (good)" in rating.value.message
    with pytest.raises(BadRequest):
        dev.application_feedback(submitted.id, 4, "   ")
    given = dev.application_feedback(submitted.id, 4, "district means answered the plan; months would help")
    assert given.status == "approved" and given.grant == approved.grant
    assert _steps(given) == ("submitted", "pre_reviewed", "approved", "feedback")
    feedback = given.history[-1]
    assert (feedback.actor, feedback.rating) == ("dev", 4)
    assert feedback.reason == "district means answered the plan; months would help"
    # The applicant's own step is not a notice to them.
    assert given.last_notice == approved.history[-1]


def test_a_returned_application_is_amended_then_withdrawn(dev: Client, admin: Client) -> None:
    submitted = dev.apply(_housing_request(columns=()))
    assert submitted.requested.columns == ()

    # Returning one says what is missing.
    with pytest.raises(BadRequest) as unexplained:
        admin.pre_review_application(submitted.id, False)
    assert "reason" in unexplained.value.message
    missing = "name the columns the scenario needs"
    returned = admin.pre_review_application(submitted.id, False, missing)
    assert returned.status == "returned" and not returned.decided
    assert returned.last_notice is not None
    assert (returned.last_notice.step, returned.last_notice.reason) == ("returned", missing)

    amended_terms = replace(returned.requested, columns=("district", "annual_income"))
    amended = dev.amend_application(submitted.id, amended_terms)
    assert amended.status == "submitted"
    assert amended.requested == amended_terms
    assert _steps(amended) == ("submitted", "returned", "amended")
    # Only a returned application is amended.
    with pytest.raises(Conflict) as again:
        dev.amend_application(submitted.id, amended_terms)
    assert again.value.status == 409

    withdrawn = dev.withdraw_application(submitted.id, "the plan is postponed")
    assert withdrawn.status == "withdrawn" and withdrawn.decided
    assert withdrawn.grant is None and withdrawn.granted is None
    assert (withdrawn.history[-1].step, withdrawn.history[-1].reason) == ("withdrawn", "the plan is postponed")
    with pytest.raises(Conflict):
        dev.withdraw_application(submitted.id)
    with pytest.raises(Conflict):
        admin.pre_review_application(submitted.id, True)
    with pytest.raises(Conflict):
        dev.application_feedback(submitted.id, 3, "never used")


def test_a_rejection_gives_reasons_and_grants_nothing(dev: Client, admin: Client) -> None:
    before = {g.id for g in dev.grants()}
    submitted = dev.apply(_housing_request(purpose="individual incomes", columns=()))
    # Decided only once in review.
    with pytest.raises(Conflict):
        admin.decide_application(submitted.id, False, "not yet pre-reviewed")
    admin.pre_review_application(submitted.id, True)
    with pytest.raises(BadRequest):
        admin.decide_application(submitted.id, False, "")
    with pytest.raises(BadRequest) as narrowed:
        admin.decide_application(submitted.id, False, "no", narrowing=Narrowing(max_runs=1))
    assert "leave the narrowing out" in narrowed.value.message
    rejected = admin.decide_application(submitted.id, False, "the purpose is not a statistic")
    assert rejected.status == "rejected" and rejected.decided
    assert rejected.grant is None and rejected.granted is None
    assert rejected.last_notice is not None and rejected.last_notice.reason == "the purpose is not a statistic"
    assert {g.id for g in dev.grants()} == before
    with pytest.raises(Conflict):
        dev.application_feedback(submitted.id, 1, "refused")


def test_each_step_is_taken_by_its_role_only(dev: Client, admin: Client, service: Service) -> None:
    submitted = dev.apply(_housing_request())
    # A developer does not take the provider's steps.
    with pytest.raises(Forbidden) as decided:
        dev.decide_application(submitted.id, True, "approving my own")
    assert decided.value.status == 403 and "decide grant applications" in decided.value.message
    with pytest.raises(Forbidden):
        dev.pre_review_application(submitted.id, True)
    # Nor does the provider apply, amend or withdraw; reviewers read none.
    with pytest.raises(Forbidden):
        admin.apply(_housing_request())
    with pytest.raises(Forbidden):
        admin.withdraw_application(submitted.id, "not theirs")
    with pytest.raises(Forbidden):
        service.client("rev").applications()
    with pytest.raises(Forbidden):
        service.client("aud").decide_application(submitted.id, False, "auditors only read")
    assert dev.application(submitted.id).status == "submitted"

    # An application is for its applicant, for one named scenario.
    with pytest.raises(BadRequest) as for_another:
        dev.apply(_housing_request(developer="rev"))
    assert "leave the developer out" in for_another.value.message
    with pytest.raises(BadRequest) as no_scenario:
        dev.apply(_housing_request(scenario=" "))
    assert "scenario" in no_scenario.value.message
    with pytest.raises(NotFound):
        dev.application("app-does-not-exist")
    with pytest.raises(TypeError):
        dev.apply({"dataset": "residents"})  # type: ignore[arg-type]


def test_application_records_tolerate_unknown_and_missing_fields() -> None:
    raw = {
        "id": "app-1",
        "applicant": "dev",
        "status": "approved",
        "requested": {"dataset": "residents", "developer": "dev", "purpose": "p", "epsilon_total": 2, "new_term": 1},
        "granted": {"dataset": "residents", "developer": "dev", "purpose": "p", "epsilon_total": 1.0,
                    "max_open_queries": None},
        "grant": "grant-1",
        "submitted_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-02T00:00:00Z",
        "history": [{"step": "feedback", "actor": "dev", "at": "t", "reason": "ok", "rating": 5, "extra": True}, "junk"],
        "something_new": [1, 2],
    }
    application = Application.from_json(raw)
    assert application.requested == GrantRequest(dataset="residents", developer="dev", purpose="p", epsilon_total=2.0)
    assert application.requested.allow_sql and application.requested.max_open_queries == 1000
    assert application.granted is not None and application.granted.max_open_queries is None
    assert application.history == (ApplicationStep(step="feedback", actor="dev", at="t", reason="ok", rating=5),)
    assert application.last_notice is None
    assert Narrowing().to_json() == {}
    assert Narrowing(columns=(), deny_udfs=True, epsilon_total=1).to_json() == {
        "epsilon_total": 1,
        "columns": [],
        "deny_udfs": True,
    }
