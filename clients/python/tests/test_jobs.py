"""Modules and jobs: upload, submit, follow the status, review."""

from __future__ import annotations

import pytest
from conftest import Service

from unseen_client import Client, Forbidden, JobView, NotFound, Unprocessable


def _outputs_of(rev: Client, job: str) -> dict:
    return {item.kind: item for item in rev.review_queue() if item.job == job}


def test_a_job_is_submitted_and_followed_until_it_ends(dev: Client, rev: Client, service: Service) -> None:
    uploaded = dev.upload_module(service.guest("district_income"))
    assert uploaded.kind == "job" and len(uploaded.module) == 64 and uploaded.functions == ()
    queued = dev.submit_job(service.grant, uploaded.module)
    assert queued.status == "queued" and queued.job.startswith("job-")
    view = dev.wait_for_job(queued.job, timeout=120)
    assert isinstance(view, JobView)
    assert view.status == "finished" and view.ended
    assert view.module_sha256 == uploaded.module and view.submitter == "dev"
    # What the guest computed waits for review; the developer sees no times.
    assert view.outcome is not None and view.outcome.review == "quarantined"
    assert view.started_at is None and view.ended_at is None and view.logs == ()
    assert queued.job in {j.id for j in dev.jobs(service.grant)}

    # A reviewer who did not submit it decides its table.
    waiting = _outputs_of(rev, queued.job)
    assert set(waiting) == {"table", "outcome"}
    table = rev.output(waiting["table"].output)
    assert table.name == "income_by_district" and table.status == "quarantined"
    frame = table.to_pandas()
    assert list(frame.columns)[:1] == ["district"] and "residents_lower" in frame.columns
    decision = rev.approve(waiting["table"].output, "DP aggregates over public districts")
    assert decision.release is not None
    assert dev.job(queued.job).outputs == (waiting["table"].output,)
    release = dev.download_release(decision.release)
    assert release.module_sha256 == uploaded.module and release.sql is None
    assert release.verify(service.ledger_pub).release == decision.release


def test_a_job_runs_with_its_udf_modules(dev: Client, rev: Client, service: Service) -> None:
    udf = dev.upload_module(service.guest("udf_sme_score"), kind="udf")
    assert udf.kind == "udf"
    assert any(f.startswith("sme_score(") for f in udf.functions)
    outcome = dev.run_job(
        service.sme_grant,
        service.guest("sme_credit_risk"),  # a path: uploaded first
        udf_modules=[udf.module],
        params={"year": "2023"},
    )
    assert outcome.status == "finished", outcome
    assert outcome.epsilon_spent == pytest.approx(1.0)
    assert outcome.outcome is not None
    view = dev.wait_for_job(outcome.job, timeout=60)
    assert view.status == "finished"
    waiting = _outputs_of(rev, outcome.job)
    assert waiting["table"].name == "sme_score_by_industry"
    release = dev.download_release(rev.approve(waiting["table"].output, "DP means per industry").release or "")
    frame = release.to_pandas()
    assert list(frame.columns) == [
        "industry",
        "firm_months", "firm_months_lower", "firm_months_upper",
        "mean_score", "mean_score_lower", "mean_score_upper",
        "risk_adjusted_score", "risk_adjusted_score_lower", "risk_adjusted_score_upper",
    ]
    assert ((frame["mean_score_lower"] <= frame["mean_score"]) & (frame["mean_score"] <= frame["mean_score_upper"])).all()


def test_udf_modules_need_a_grant_that_allows_them(dev: Client, service: Service) -> None:
    udf = dev.upload_module(service.guest("udf_sme_score").read_bytes(), kind="udf")
    with pytest.raises(Forbidden):
        dev.submit_job(service.grant, service.guest("district_income"), udf_modules=[udf.module])


def test_a_module_the_sandbox_refuses_is_unprocessable(dev: Client) -> None:
    with pytest.raises(Unprocessable) as caught:
        dev.upload_module(b"\0asm\x01\0\0\0")
    assert caught.value.status == 422


def test_a_submitter_cannot_review_and_strangers_see_no_job(dev: Client, rev: Client, service: Service) -> None:
    outcome = dev.run_job(service.grant, service.guest("district_income"))
    assert dev.wait_for_job(outcome.job).outcome is not None
    waiting = _outputs_of(rev, outcome.job)
    with pytest.raises(Forbidden):
        dev.approve(waiting["outcome"].output, "my own")
    with pytest.raises(NotFound):
        dev.job("job-0000000000")
    # The outcome is decided apart from the tables: rejecting it is recorded.
    assert rev.reject(waiting["outcome"].output, "logs not needed").status == "rejected"
    assert dev.job(outcome.job).outcome.review == "rejected"  # type: ignore[union-attr]
