"""Outside data for one grant: a developer proposes a bank's loan book
keyed by the grant's privacy unit; it is checked and quarantined, listed,
and registered joined to that grant only when an admin approves it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator, List

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Service

from unseen_client import (
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    GrantRequest,
    Import,
    ImportChecks,
)

#: The bank's loan book: one row per enterprise, keyed by `credit_code`
#: (the privacy unit of `enterprises`), which is prohibited; no column open.
MANIFEST = '''name = "bank_loans"
version = 1
description = "A bank's loans to enterprises: the amount lent and whether the loan defaulted. One row per enterprise."
privacy_unit = "credit_code"
max_contributions = 1
min_group_size = 8
join_keys = ["credit_code"]

[[columns]]
name = "credit_code"
type = "utf8"
class = "prohibited"

[[columns]]
name = "loan_amount"
type = "int64"
class = "conditional"
bounds = [0, 10000000]

[[columns]]
name = "defaulted"
type = "int64"
class = "conditional"
bounds = [0, 1]
'''

CREDIT_CODE_FORMAT = "GB 32100-2015 unified social credit code"

JOIN_SQL = (
    "SELECT e.industry, AVG(b.defaulted) AS default_rate FROM enterprises e "
    "JOIN bank_loans b ON e.credit_code = b.credit_code GROUP BY e.industry"
)


@pytest.fixture(scope="module")
def admin(service: Service) -> Client:
    return service.client("admin")


@pytest.fixture(scope="module")
def loan_grant(service: Service, admin: Client) -> str:
    """A grant to `dev` over `enterprises`, obtained by application, that
    the imports are proposed for."""
    dev = service.client("dev")
    applied = dev.apply(
        GrantRequest(
            dataset="enterprises",
            scenario="SME credit with a bank's loan outcomes",
            purpose="default rates by industry",
            epsilon_total=5.0,
            query_epsilon=1.0,
        )
    )
    admin.pre_review_application(applied.id, True)
    approved = admin.decide_application(applied.id, True, "joined on credit_code below DP only")
    assert approved.grant is not None
    return approved.grant


@pytest.fixture(scope="module")
def credit_codes(service: Service) -> List[str]:
    """Every other enterprise's credit code, read from the Parquet file the
    service's `enterprises` dataset was registered from: valid codes, with
    their check characters."""
    codes = pq.read_table(service.work_dir / "enterprises.parquet", columns=["credit_code"])
    return codes.column("credit_code").to_pylist()[::2]


def loan_book(codes: List[str]) -> bytes:
    """The loan book for `codes` as Parquet bytes."""
    table = pa.table(
        {
            "credit_code": pa.array(codes, type=pa.string()),
            "loan_amount": pa.array([(i * 7919) % 5_000_000 + 10_000 for i in range(len(codes))], type=pa.int64()),
            "defaulted": pa.array([1 if i % 9 == 0 else 0 for i in range(len(codes))], type=pa.int64()),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def with_wrong_check_character(code: str) -> str:
    return code[:17] + ("1" if code[17] == "0" else "0")


@pytest.fixture(scope="module")
def proposed(service: Service, loan_grant: str, credit_codes: List[str]) -> Iterator[Import]:
    dev = service.client("dev")
    yield dev.propose_import(loan_grant, "bank_loans", MANIFEST, loan_book(credit_codes))


def test_a_file_that_fails_the_checks_is_refused_with_what_to_fix(
    service: Service, loan_grant: str, credit_codes: List[str], tmp_path: Path
) -> None:
    dev = service.client("dev")
    assert len(credit_codes[2]) == 18
    broken = list(credit_codes)
    broken[2] = with_wrong_check_character(broken[2])
    with pytest.raises(BadRequest) as checked:
        dev.propose_import(loan_grant, "bank_loans", MANIFEST, loan_book(broken))
    message = checked.value.message
    assert f"1 of {len(credit_codes)} keys" in message and CREDIT_CODE_FORMAT in message
    assert "data row 3" in message

    repeated = credit_codes + credit_codes[:1]
    with pytest.raises(BadRequest) as twice:
        dev.propose_import(loan_grant, "bank_loans", MANIFEST, loan_book(repeated))
    assert "repeat a key" in twice.value.message

    # The key must be prohibited and no column open; the name is the manifest's.
    book = tmp_path / "loans.parquet"
    book.write_bytes(loan_book(credit_codes))
    manifest = tmp_path / "loans.toml"
    manifest.write_text(MANIFEST.replace('class = "prohibited"', 'class = "conditional"'), encoding="utf-8")
    with pytest.raises(BadRequest) as key_open:
        dev.propose_import(loan_grant, "bank_loans", manifest, book)
    assert "must be declared prohibited" in key_open.value.message
    with_open_column = MANIFEST.replace(
        'name = "defaulted"\ntype = "int64"\nclass = "conditional"',
        'name = "defaulted"\ntype = "int64"\nclass = "open"',
    )
    assert with_open_column != MANIFEST
    with pytest.raises(BadRequest) as opened:
        dev.propose_import(loan_grant, "bank_loans", with_open_column, str(book))
    assert "declared open" in opened.value.message
    with pytest.raises(BadRequest):
        dev.propose_import(loan_grant, "bank_loans_other", MANIFEST, book)

    # Only a developer of the grant proposes.
    with pytest.raises(Forbidden) as by_admin:
        service.client("admin").propose_import(loan_grant, "bank_loans", MANIFEST, book)
    assert by_admin.value.status == 403
    # Nothing refused was kept.
    assert "bank_loans" not in {i.dataset for i in dev.imports()}


def test_a_proposed_import_is_checked_quarantined_and_listed(
    service: Service, loan_grant: str, credit_codes: List[str], proposed: Import
) -> None:
    assert isinstance(proposed, Import) and proposed.id.startswith("imp-")
    assert (proposed.dataset, proposed.grant, proposed.proposed_by) == ("bank_loans", loan_grant, "dev")
    assert proposed.status == "proposed"
    book = loan_book(credit_codes)
    assert proposed.source_sha256 == hashlib.sha256(book).hexdigest()
    assert proposed.checks == ImportChecks(
        rows=len(credit_codes), bytes=len(book), key="credit_code", key_format=CREDIT_CODE_FORMAT
    )
    assert proposed.decided_by is None and proposed.decided_at is None and proposed.epsilon_total is None
    assert proposed.proposed_at

    # Listed to its proposer and the providers; reviewers read none.
    assert proposed in service.client("dev").imports()
    assert proposed.id in {i.id for i in service.client("admin").imports()}
    assert proposed.id in {i.id for i in service.client("aud").imports()}
    with pytest.raises(Forbidden):
        service.client("rev").imports()
    # Quarantined: not a dataset, not joinable, and the name is taken.
    assert "bank_loans" not in {d.name for d in service.client("dev").datasets()}
    assert "bank_loans" not in service.client("dev").grant(loan_grant).join_datasets
    with pytest.raises(Conflict):
        service.client("dev").propose_import(loan_grant, "bank_loans", MANIFEST, book)


def test_an_admin_approves_an_import_into_its_grant_with_its_own_budget(
    service: Service, admin: Client, loan_grant: str, proposed: Import
) -> None:
    dev = service.client("dev")
    # A developer does not decide imports.
    with pytest.raises(Forbidden) as refused:
        dev.decide_import(proposed.id, True, "my own data", epsilon=1.0)
    assert refused.value.status == 403 and "decide imports" in refused.value.message
    # Approval needs its own budget and a reason.
    with pytest.raises(BadRequest) as no_budget:
        admin.decide_import(proposed.id, True, "loan outcomes")
    assert "epsilon" in no_budget.value.message
    with pytest.raises(BadRequest):
        admin.decide_import(proposed.id, True, " ", epsilon=1.0)

    reason = "loan outcomes for SME credit, joined on credit_code only"
    approved = admin.decide_import(proposed.id, True, reason, epsilon=1.0)
    assert approved.id == proposed.id and approved.status == "approved"
    assert (approved.decided_by, approved.reason, approved.epsilon_total) == ("admin", reason, 1.0)
    assert approved.decided_at
    assert approved.checks == proposed.checks and approved.source_sha256 == proposed.source_sha256
    assert approved in dev.imports()
    with pytest.raises(Conflict):
        admin.decide_import(proposed.id, False, "again")

    # Registered, joined to its grant with its own budget layer.
    assert "bank_loans" in {d.name for d in dev.datasets()}
    assert "bank_loans" in dev.grant(loan_grant).join_datasets
    layers = {(layer.layer, layer.id): layer for layer in dev.budget(loan_grant).layers}
    assert layers[("dataset", "bank_loans")].total == 1.0
    # Joinable on the privacy unit below a DP aggregate, and nothing else.
    assert dev.dry_run(loan_grant, JOIN_SQL).admitted
    assert not dev.dry_run(loan_grant, "SELECT loan_amount, defaulted FROM bank_loans").admitted


def test_a_rejected_import_is_not_registered(
    service: Service, admin: Client, loan_grant: str, credit_codes: List[str]
) -> None:
    dev = service.client("dev")
    name = "bank_loans_declined"
    proposal = dev.propose_import(
        loan_grant, name, MANIFEST.replace('name = "bank_loans"', f'name = "{name}"'), loan_book(credit_codes[:200])
    )
    assert proposal.status == "proposed" and proposal.checks.rows == 200
    with pytest.raises(BadRequest):
        admin.decide_import(proposal.id, False, "")
    rejected = admin.decide_import(proposal.id, False, "the bank's consent is missing")
    assert rejected.status == "rejected" and rejected.epsilon_total is None
    assert (rejected.decided_by, rejected.reason) == ("admin", "the bank's consent is missing")
    assert name not in {d.name for d in dev.datasets()}
    assert name not in dev.grant(loan_grant).join_datasets
    with pytest.raises(Conflict):
        admin.decide_import(proposal.id, True, "after all", epsilon=1.0)
