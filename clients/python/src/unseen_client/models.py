"""The service's answers as typed, immutable records (``docs/openapi.json``).

Fields the service adds later are ignored; fields it leaves out take their
documented default. Each record keeps nothing it was not sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple

from .errors import Refused

__all__ = [
    "JobStatus",
    "ENDED",
    "Me",
    "Ready",
    "Dataset",
    "Grant",
    "BudgetLayer",
    "GrantBudget",
    "GrantUsage",
    "DryRun",
    "OutcomeReview",
    "Outcome",
    "JobQueued",
    "JobView",
    "JobCancelled",
    "ModuleUploaded",
    "ReviewItem",
    "OutputShown",
    "ReviewDecision",
    "LedgerVerified",
    "GrantRequest",
    "ApplicationStatus",
    "ApplicationStep",
    "Application",
    "Narrowing",
    "ImportStatus",
    "ImportChecks",
    "Import",
    "column_named_in",
]

#: Where a job stands: ``queued``, ``running``, then ``finished``,
#: ``stopped`` or ``refused``.
JobStatus = Literal["queued", "running", "finished", "stopped", "refused"]

#: Statuses after which a job changes no more.
ENDED = frozenset({"finished", "stopped", "refused"})

#: Where a grant application stands: ``submitted``, then ``in_review`` or
#: ``returned`` (amended back to ``submitted``), then ``approved`` or
#: ``rejected``; ``withdrawn`` by its applicant before a decision.
ApplicationStatus = Literal["submitted", "returned", "in_review", "approved", "rejected", "withdrawn"]

#: Where a proposed import stands: ``proposed`` (quarantined, waiting for a
#: data provider), ``approved`` (registered, joined to its grant),
#: ``rejected`` or ``destroyed`` (with its grant).
ImportStatus = Literal["proposed", "approved", "rejected", "destroyed"]

_COLUMN_IN_REASON = re.compile(r"column `([^`]+)` of `([^`]+)`")


def column_named_in(reason: Optional[str]) -> Optional[str]:
    """The ``table.column`` a policy refusal's explanation names first
    (``column `id_number` of `residents` is prohibited`` gives
    ``residents.id_number``), the form the ledger records it in."""
    if not reason:
        return None
    m = _COLUMN_IN_REASON.search(reason)
    return f"{m.group(2)}.{m.group(1)}" if m else None


def _str(d: Mapping[str, Any], key: str, default: str = "") -> str:
    v = d.get(key)
    return v if isinstance(v, str) else default


def _opt_str(d: Mapping[str, Any], key: str) -> Optional[str]:
    v = d.get(key)
    return v if isinstance(v, str) else None


def _int(d: Mapping[str, Any], key: str, default: int = 0) -> int:
    v = d.get(key)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def _opt_int(d: Mapping[str, Any], key: str) -> Optional[int]:
    v = d.get(key)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _float(d: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    v = d.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def _opt_float(d: Mapping[str, Any], key: str) -> Optional[float]:
    v = d.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _bool(d: Mapping[str, Any], key: str, default: bool = False) -> bool:
    v = d.get(key)
    return v if isinstance(v, bool) else default


def _strs(d: Mapping[str, Any], key: str) -> Tuple[str, ...]:
    v = d.get(key)
    return tuple(x for x in v if isinstance(x, str)) if isinstance(v, list) else ()


def _obj(d: Mapping[str, Any], key: str) -> Dict[str, Any]:
    v = d.get(key)
    return v if isinstance(v, dict) else {}


@dataclass(frozen=True)
class Me:
    """``GET /v1/me``: who the token belongs to."""

    user: str
    role: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Me":
        return cls(user=_str(d, "user"), role=_str(d, "role"))


@dataclass(frozen=True)
class Ready:
    """``GET /v1/ready``: each part (``store``, ``ledger``, ``keys``) is
    ``ok`` or says what is wrong."""

    ready: bool
    checks: Dict[str, str]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Ready":
        return cls(ready=_bool(d, "ready"), checks={k: str(v) for k, v in _obj(d, "checks").items()})


@dataclass(frozen=True)
class Dataset:
    """A registered dataset as listed."""

    name: str
    rows: int
    manifest_version: int
    registered_by: str
    registered_at: str
    epsilon_spent: float
    epsilon_total: Optional[float] = None
    destroyed_at: Optional[str] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Dataset":
        return cls(
            name=_str(d, "name"),
            rows=_int(d, "rows"),
            manifest_version=_int(d, "manifest_version"),
            registered_by=_str(d, "registered_by"),
            registered_at=_str(d, "registered_at"),
            epsilon_spent=_float(d, "epsilon_spent"),
            epsilon_total=_opt_float(d, "epsilon_total"),
            destroyed_at=_opt_str(d, "destroyed_at"),
        )


@dataclass(frozen=True)
class Grant:
    """A grant (the authorization agreement) with its usage controls."""

    id: str
    dataset: str
    join_datasets: Tuple[str, ...]
    developer: str
    scenario: str
    purpose: str
    epsilon_total: float
    epsilon_spent: float
    query_epsilon: float
    issued_at: str
    expires_at: str
    revoked_at: Optional[str]
    allow_modules: bool
    allow_sql: bool
    allow_extracts: bool
    allow_udfs: bool
    udf_row_instructions: int
    windows: Tuple[str, ...]
    designated: Tuple[str, ...]
    columns: Tuple[str, ...]
    max_runs: Optional[int]
    runs: int
    max_downloads: Optional[int]
    downloads: int
    derived_reuse: bool
    approvals_required: int
    delta_total: float
    query_delta: float
    delta_spent: float
    max_open_queries: Optional[int]
    open_query_window: int
    open_queries: int

    @property
    def epsilon_left(self) -> float:
        return max(self.epsilon_total - self.epsilon_spent, 0.0)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Grant":
        return cls(
            id=_str(d, "id"),
            dataset=_str(d, "dataset"),
            join_datasets=_strs(d, "join_datasets"),
            developer=_str(d, "developer"),
            scenario=_str(d, "scenario"),
            purpose=_str(d, "purpose"),
            epsilon_total=_float(d, "epsilon_total"),
            epsilon_spent=_float(d, "epsilon_spent"),
            query_epsilon=_float(d, "query_epsilon"),
            issued_at=_str(d, "issued_at"),
            expires_at=_str(d, "expires_at"),
            revoked_at=_opt_str(d, "revoked_at"),
            allow_modules=_bool(d, "allow_modules"),
            allow_sql=_bool(d, "allow_sql"),
            allow_extracts=_bool(d, "allow_extracts"),
            allow_udfs=_bool(d, "allow_udfs"),
            udf_row_instructions=_int(d, "udf_row_instructions"),
            windows=_strs(d, "windows"),
            designated=_strs(d, "designated"),
            columns=_strs(d, "columns"),
            max_runs=_opt_int(d, "max_runs"),
            runs=_int(d, "runs"),
            max_downloads=_opt_int(d, "max_downloads"),
            downloads=_int(d, "downloads"),
            derived_reuse=_bool(d, "derived_reuse"),
            approvals_required=_int(d, "approvals_required", 1),
            delta_total=_float(d, "delta_total"),
            query_delta=_float(d, "query_delta"),
            delta_spent=_float(d, "delta_spent"),
            max_open_queries=_opt_int(d, "max_open_queries"),
            open_query_window=_int(d, "open_query_window"),
            open_queries=_int(d, "open_queries"),
        )


@dataclass(frozen=True)
class BudgetLayer:
    """Spent and total epsilon of one layer: ``grant``, ``dataset`` or
    ``developer``. ``total`` is ``None`` when the layer has no limit."""

    layer: str
    id: str
    spent: float
    total: Optional[float]

    @property
    def left(self) -> Optional[float]:
        return None if self.total is None else max(self.total - self.spent, 0.0)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "BudgetLayer":
        return cls(layer=_str(d, "layer"), id=_str(d, "id"), spent=_float(d, "spent"), total=_opt_float(d, "total"))


@dataclass(frozen=True)
class GrantBudget:
    """``GET /v1/grants/{id}/budget``: the grant's spend and its layers'."""

    grant: str
    epsilon_spent: float
    epsilon_left: float
    delta_spent: float
    delta_total: float
    layers: Tuple[BudgetLayer, ...]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "GrantBudget":
        layers = d.get("layers")
        return cls(
            grant=_str(d, "grant"),
            epsilon_spent=_float(d, "epsilon_spent"),
            epsilon_left=_float(d, "epsilon_left"),
            delta_spent=_float(d, "delta_spent"),
            delta_total=_float(d, "delta_total"),
            layers=tuple(BudgetLayer.from_json(x) for x in layers if isinstance(x, dict))
            if isinstance(layers, list)
            else (),
        )


@dataclass(frozen=True)
class GrantUsage:
    """``GET /v1/grants/{id}/usage``. For a developer, what guests chose to
    compute (queries, fuel, rows read, run time, outputs) is ``None``."""

    grant: str
    runs: int
    max_runs: Optional[int]
    jobs_by_status: Dict[str, int]
    queries: Optional[int]
    fuel_used: Optional[int]
    rows_read: Optional[int]
    run_ms: Optional[int]
    open_queries: int
    open_queries_in_window: int
    max_open_queries: Optional[int]
    open_query_window: int
    epsilon_spent: float
    outputs: Optional[int]
    releases: int
    downloads: int
    max_downloads: Optional[int]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "GrantUsage":
        return cls(
            grant=_str(d, "grant"),
            runs=_int(d, "runs"),
            max_runs=_opt_int(d, "max_runs"),
            jobs_by_status={k: int(v) for k, v in _obj(d, "jobs_by_status").items() if isinstance(v, int)},
            queries=_opt_int(d, "queries"),
            fuel_used=_opt_int(d, "fuel_used"),
            rows_read=_opt_int(d, "rows_read"),
            run_ms=_opt_int(d, "run_ms"),
            open_queries=_int(d, "open_queries"),
            open_queries_in_window=_int(d, "open_queries_in_window"),
            max_open_queries=_opt_int(d, "max_open_queries"),
            open_query_window=_int(d, "open_query_window"),
            epsilon_spent=_float(d, "epsilon_spent"),
            outputs=_opt_int(d, "outputs"),
            releases=_int(d, "releases"),
            downloads=_int(d, "downloads"),
            max_downloads=_opt_int(d, "max_downloads"),
        )


@dataclass(frozen=True)
class DryRun:
    """The verdict of a dry run: whether the query would be admitted, what
    it would cost and how accurate it would be, without reading data or
    spending. ``accuracy`` holds each noisy component's interval half-width
    at ``confidence``."""

    admitted: bool
    reason: Optional[str]
    rule: Optional[str]
    column: Optional[str]
    epsilon: float
    confidence: float
    accuracy: Tuple[Tuple[str, float], ...]
    cached: bool
    epsilon_spent: float
    epsilon_left: float

    def raise_if_refused(self) -> "DryRun":
        """Raises :class:`Refused` when the query would be refused."""
        if not self.admitted:
            raise Refused(self.reason or "the query would be refused", rule=self.rule, column=self.column)
        return self

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "DryRun":
        accuracy: List[Tuple[str, float]] = []
        raw = d.get("accuracy")
        if isinstance(raw, list):
            for item in raw:
                if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str):
                    accuracy.append((item[0], float(item[1])))
        reason = _opt_str(d, "reason")
        return cls(
            admitted=_bool(d, "admitted"),
            reason=reason,
            rule=_opt_str(d, "rule"),
            # Read when the service names it; otherwise from its explanation.
            column=_opt_str(d, "column") or column_named_in(reason),
            epsilon=_float(d, "epsilon"),
            confidence=_float(d, "confidence"),
            accuracy=tuple(accuracy),
            cached=_bool(d, "cached"),
            epsilon_spent=_float(d, "epsilon_spent"),
            epsilon_left=_float(d, "epsilon_left"),
        )


@dataclass(frozen=True)
class OutcomeReview:
    """A job's outcome output and where its review stands (``quarantined``,
    ``approved``, ``rejected`` or ``pruned``)."""

    output: str
    review: str

    @classmethod
    def from_json(cls, d: Any) -> Optional["OutcomeReview"]:
        if not isinstance(d, dict):
            return None
        return cls(output=_str(d, "output"), review=_str(d, "review"))


@dataclass(frozen=True)
class Outcome:
    """How a job, query or extract ended, as its developer sees it."""

    job: str
    status: str
    epsilon_spent: float
    outputs: Tuple[str, ...]
    stopped_by: Optional[str] = None
    reason: Optional[str] = None
    outcome: Optional[OutcomeReview] = None
    withheld: Optional[str] = None
    protection: Optional[Dict[str, Any]] = None

    @property
    def output(self) -> Optional[str]:
        """The output of a query or an extract (they have one)."""
        return self.outputs[0] if self.outputs else None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Outcome":
        protection = d.get("protection")
        return cls(
            job=_str(d, "job"),
            status=_str(d, "status"),
            epsilon_spent=_float(d, "epsilon_spent"),
            outputs=_strs(d, "outputs"),
            stopped_by=_opt_str(d, "stopped_by"),
            reason=_opt_str(d, "reason"),
            outcome=OutcomeReview.from_json(d.get("outcome")),
            withheld=_opt_str(d, "withheld"),
            protection=protection if isinstance(protection, dict) else None,
        )


@dataclass(frozen=True)
class JobQueued:
    """``POST /v1/jobs`` without waiting: the job is queued."""

    job: str
    status: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "JobQueued":
        return cls(job=_str(d, "job"), status=_str(d, "status"))


@dataclass(frozen=True)
class JobView:
    """A job as the caller may see it. For its developer, what the guest
    computed (ending, error, logs, refusals, metering) stays empty until a
    reviewer approves the job's outcome output, and times are never shown."""

    id: str
    grant: str
    submitter: str
    status: str
    submitted_at: str
    epsilon_spent: float
    outputs: Tuple[str, ...]
    logs: Tuple[str, ...]
    refusals: Tuple[str, ...]
    module_sha256: Optional[str] = None
    sql: Optional[str] = None
    stopped_by: Optional[str] = None
    reason: Optional[str] = None
    outcome: Optional[OutcomeReview] = None
    ending: Optional[str] = None
    error: Optional[str] = None
    started_at: Optional[str] = None
    ended_at: Optional[str] = None
    fuel_used: Optional[int] = None
    queries: Optional[int] = None
    rows_read: Optional[int] = None
    run_ms: Optional[int] = None
    shown_end_ms: Optional[int] = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "JobView":
        return cls(
            id=_str(d, "id"),
            grant=_str(d, "grant"),
            submitter=_str(d, "submitter"),
            status=_str(d, "status"),
            submitted_at=_str(d, "submitted_at"),
            epsilon_spent=_float(d, "epsilon_spent"),
            outputs=_strs(d, "outputs"),
            logs=_strs(d, "logs"),
            refusals=_strs(d, "refusals"),
            module_sha256=_opt_str(d, "module_sha256"),
            sql=_opt_str(d, "sql"),
            stopped_by=_opt_str(d, "stopped_by"),
            reason=_opt_str(d, "reason"),
            outcome=OutcomeReview.from_json(d.get("outcome")),
            ending=_opt_str(d, "ending"),
            error=_opt_str(d, "error"),
            started_at=_opt_str(d, "started_at"),
            ended_at=_opt_str(d, "ended_at"),
            fuel_used=_opt_int(d, "fuel_used"),
            queries=_opt_int(d, "queries"),
            rows_read=_opt_int(d, "rows_read"),
            run_ms=_opt_int(d, "run_ms"),
            shown_end_ms=_opt_int(d, "shown_end_ms"),
        )


@dataclass(frozen=True)
class JobCancelled:
    """``POST /v1/jobs/{id}/cancel``: ``cancelled`` (it was queued) or
    ``stopping``."""

    job: str
    state: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "JobCancelled":
        return cls(job=_str(d, "job"), state=_str(d, "state"))


@dataclass(frozen=True)
class ModuleUploaded:
    """``POST /v1/modules``: the module's id (its SHA-256) and, for a UDF
    module, the SQL signatures of its functions."""

    module: str
    kind: str
    functions: Tuple[str, ...] = ()

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ModuleUploaded":
        return cls(module=_str(d, "module"), kind=_str(d, "kind"), functions=_strs(d, "functions"))


@dataclass(frozen=True)
class ReviewItem:
    """One output waiting in the review queue (``GET /v1/reviews``).
    ``raw`` holds every field the service sent (findings, diff, guest
    logs, disclosure, ...)."""

    output: str
    name: str
    kind: str
    job: str
    grant: str
    submitter: str
    approvals: int
    approvals_required: int
    findings: Tuple[Dict[str, Any], ...]
    raw: Dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ReviewItem":
        findings = d.get("findings")
        return cls(
            output=_str(d, "output"),
            name=_str(d, "name"),
            kind=_str(d, "kind"),
            job=_str(d, "job"),
            grant=_str(d, "grant"),
            submitter=_str(d, "submitter"),
            approvals=_int(d, "approvals"),
            approvals_required=_int(d, "approvals_required", 1),
            findings=tuple(f for f in findings if isinstance(f, dict)) if isinstance(findings, list) else (),
            raw=dict(d),
        )


@dataclass(frozen=True)
class OutputShown:
    """``GET /v1/outputs/{id}``: a quarantined output as a reviewer sees it."""

    name: str
    kind: str
    status: str
    table: Dict[str, Any]
    findings: Tuple[Dict[str, Any], ...]
    disclosure: Any

    def to_pandas(self) -> Any:
        from .tables import table_to_pandas

        return table_to_pandas(self.table)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "OutputShown":
        findings = d.get("findings")
        return cls(
            name=_str(d, "name"),
            kind=_str(d, "kind"),
            status=_str(d, "status"),
            table=_obj(d, "table"),
            findings=tuple(f for f in findings if isinstance(f, dict)) if isinstance(findings, list) else (),
            disclosure=d.get("disclosure"),
        )


@dataclass(frozen=True)
class ReviewDecision:
    """``POST /v1/outputs/{id}/approve`` or ``/reject``. ``release`` is set
    once the approvals the grant needs are in."""

    output: str
    status: str
    release: Optional[str] = None
    document: Optional[Dict[str, Any]] = field(default=None, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ReviewDecision":
        document = d.get("document")
        return cls(
            output=_str(d, "output"),
            status=_str(d, "status"),
            release=_opt_str(d, "release"),
            document=document if isinstance(document, dict) else None,
        )


@dataclass(frozen=True)
class LedgerVerified:
    """``GET /v1/ledger/verify``: entries checked and the Merkle root."""

    ok: bool
    entries: int
    root: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "LedgerVerified":
        return cls(ok=_bool(d, "ok"), entries=_int(d, "entries"), root=_str(d, "root"))


# --- grant applications ---------------------------------------------------------


@dataclass(frozen=True)
class GrantRequest:
    """The terms of a grant: what an application asks for (``requested``)
    and what its approval issued (``granted``), and the body of
    :meth:`Client.apply` and :meth:`Client.amend_application`.

    Only ``dataset``, ``purpose`` and ``epsilon_total`` need a value; an
    application also names its ``scenario``. The other fields default as
    the service defaults them. ``developer`` left empty is the applicant
    (an application is always for the developer who makes it).
    ``max_open_queries`` ``None`` is no limit."""

    dataset: str
    purpose: str
    epsilon_total: float
    scenario: str = ""
    developer: str = ""
    join_datasets: Tuple[str, ...] = ()
    query_epsilon: float = 0.5
    valid_days: int = 365
    extended_validity: bool = False
    allow_modules: bool = True
    allow_sql: bool = True
    allow_extracts: bool = False
    allow_udfs: bool = False
    udf_row_instructions: int = 1_000_000
    windows: Tuple[str, ...] = ()
    designated: Tuple[str, ...] = ()
    columns: Tuple[str, ...] = ()
    max_runs: Optional[int] = None
    max_downloads: Optional[int] = None
    derived_reuse: bool = False
    approvals_required: int = 1
    delta_total: float = 0.0
    query_delta: float = 1e-6
    max_open_queries: Optional[int] = 1000
    open_query_window: int = 3600

    def to_json(self) -> Dict[str, Any]:
        """The request body: every term, lists as JSON arrays."""
        return {
            "dataset": self.dataset,
            "join_datasets": list(self.join_datasets),
            "developer": self.developer,
            "scenario": self.scenario,
            "purpose": self.purpose,
            "epsilon_total": self.epsilon_total,
            "query_epsilon": self.query_epsilon,
            "valid_days": self.valid_days,
            "extended_validity": self.extended_validity,
            "allow_modules": self.allow_modules,
            "allow_sql": self.allow_sql,
            "allow_extracts": self.allow_extracts,
            "allow_udfs": self.allow_udfs,
            "udf_row_instructions": self.udf_row_instructions,
            "windows": list(self.windows),
            "designated": list(self.designated),
            "columns": list(self.columns),
            "max_runs": self.max_runs,
            "max_downloads": self.max_downloads,
            "derived_reuse": self.derived_reuse,
            "approvals_required": self.approvals_required,
            "delta_total": self.delta_total,
            "query_delta": self.query_delta,
            "max_open_queries": self.max_open_queries,
            "open_query_window": self.open_query_window,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "GrantRequest":
        return cls(
            dataset=_str(d, "dataset"),
            purpose=_str(d, "purpose"),
            epsilon_total=_float(d, "epsilon_total"),
            scenario=_str(d, "scenario"),
            developer=_str(d, "developer"),
            join_datasets=_strs(d, "join_datasets"),
            query_epsilon=_float(d, "query_epsilon", 0.5),
            valid_days=_int(d, "valid_days", 365),
            extended_validity=_bool(d, "extended_validity"),
            allow_modules=_bool(d, "allow_modules", True),
            allow_sql=_bool(d, "allow_sql", True),
            allow_extracts=_bool(d, "allow_extracts"),
            allow_udfs=_bool(d, "allow_udfs"),
            udf_row_instructions=_int(d, "udf_row_instructions", 1_000_000),
            windows=_strs(d, "windows"),
            designated=_strs(d, "designated"),
            columns=_strs(d, "columns"),
            max_runs=_opt_int(d, "max_runs"),
            max_downloads=_opt_int(d, "max_downloads"),
            derived_reuse=_bool(d, "derived_reuse"),
            approvals_required=_int(d, "approvals_required", 1),
            delta_total=_float(d, "delta_total"),
            query_delta=_float(d, "query_delta", 1e-6),
            # Sent as null when there is no limit; absent, the default.
            max_open_queries=_opt_int(d, "max_open_queries") if "max_open_queries" in d else 1000,
            open_query_window=_int(d, "open_query_window", 3600),
        )


@dataclass(frozen=True)
class ApplicationStep:
    """One step of an application's history, what its applicant is
    notified of: ``submitted``, ``amended``, ``pre_reviewed``,
    ``returned``, ``approved``, ``rejected``, ``withdrawn`` or
    ``feedback``. ``reason`` is the reasons given (the text, for
    feedback); ``rating`` is set for feedback."""

    step: str
    actor: str
    at: str
    reason: str
    rating: Optional[int] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ApplicationStep":
        return cls(
            step=_str(d, "step"),
            actor=_str(d, "actor"),
            at=_str(d, "at"),
            reason=_str(d, "reason"),
            rating=_opt_int(d, "rating"),
        )


@dataclass(frozen=True)
class Application:
    """A grant application as its applicant, the data provider and
    auditors see it. ``requested`` holds the terms asked for (its
    ``developer`` is the applicant); once approved, ``granted`` holds the
    terms the grant ``grant`` was issued with."""

    id: str
    applicant: str
    status: str
    requested: GrantRequest
    granted: Optional[GrantRequest]
    grant: Optional[str]
    submitted_at: str
    updated_at: str
    history: Tuple[ApplicationStep, ...]

    @property
    def decided(self) -> bool:
        """Approved, rejected or withdrawn: only feedback may follow."""
        return self.status in ("approved", "rejected", "withdrawn")

    @property
    def last_notice(self) -> Optional[ApplicationStep]:
        """The last step someone other than the applicant took: what the
        applicant was last notified of."""
        for step in reversed(self.history):
            if step.actor != self.applicant:
                return step
        return None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Application":
        history = d.get("history")
        return cls(
            id=_str(d, "id"),
            applicant=_str(d, "applicant"),
            status=_str(d, "status"),
            requested=GrantRequest.from_json(_obj(d, "requested")),
            granted=GrantRequest.from_json(d["granted"]) if isinstance(d.get("granted"), dict) else None,
            grant=_opt_str(d, "grant"),
            submitted_at=_str(d, "submitted_at"),
            updated_at=_str(d, "updated_at"),
            history=tuple(ApplicationStep.from_json(s) for s in history if isinstance(s, dict))
            if isinstance(history, list)
            else (),
        )


@dataclass(frozen=True)
class Narrowing:
    """How the data provider narrows an application's terms when approving
    it (:meth:`Client.decide_application`). Every field may only narrow
    what was asked for: a smaller budget, a shorter term, fewer columns,
    users, datasets, windows, runs or downloads, more approvals per
    release, operations turned off. ``None`` and ``False`` leave a term as
    asked."""

    epsilon_total: Optional[float] = None
    query_epsilon: Optional[float] = None
    valid_days: Optional[int] = None
    columns: Optional[Tuple[str, ...]] = None
    designated: Optional[Tuple[str, ...]] = None
    join_datasets: Optional[Tuple[str, ...]] = None
    windows: Optional[Tuple[str, ...]] = None
    approvals_required: Optional[int] = None
    max_runs: Optional[int] = None
    max_downloads: Optional[int] = None
    deny_derived_reuse: bool = False
    deny_modules: bool = False
    deny_sql: bool = False
    deny_extracts: bool = False
    deny_udfs: bool = False

    def to_json(self) -> Dict[str, Any]:
        """The terms it changes; an empty object changes none."""
        body: Dict[str, Any] = {}
        for name in (
            "epsilon_total",
            "query_epsilon",
            "valid_days",
            "approvals_required",
            "max_runs",
            "max_downloads",
        ):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        for name in ("columns", "designated", "join_datasets", "windows"):
            value = getattr(self, name)
            if value is not None:
                body[name] = list(value)
        for name in ("deny_derived_reuse", "deny_modules", "deny_sql", "deny_extracts", "deny_udfs"):
            if getattr(self, name):
                body[name] = True
        return body


# --- imports ---------------------------------------------------------------------


@dataclass(frozen=True)
class ImportChecks:
    """What the checks of a proposed file found (counts, never values):
    its rows and bytes, its key column (the privacy unit it joins on) and
    the format the keys were checked against (``GB 32100-2015 unified
    social credit code``, ``GB 11643-1999 citizen identity number``, with
    their check characters, or ``non-empty``)."""

    rows: int
    bytes: int
    key: str
    key_format: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ImportChecks":
        return cls(
            rows=_int(d, "rows"),
            bytes=_int(d, "bytes"),
            key=_str(d, "key"),
            key_format=_str(d, "key_format"),
        )


@dataclass(frozen=True)
class Import:
    """Outside data proposed for one grant, as its proposer, the data
    providers and auditors see it. ``dataset`` is the name it is
    registered under when approved; ``source_sha256`` the SHA-256 of the
    Parquet file as proposed; ``epsilon_total`` its own budget layer, set
    at approval."""

    id: str
    dataset: str
    grant: str
    proposed_by: str
    status: str
    source_sha256: str
    checks: ImportChecks
    proposed_at: str
    reason: str
    decided_by: Optional[str] = None
    decided_at: Optional[str] = None
    epsilon_total: Optional[float] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Import":
        return cls(
            id=_str(d, "id"),
            dataset=_str(d, "dataset"),
            grant=_str(d, "grant"),
            proposed_by=_str(d, "proposed_by"),
            status=_str(d, "status"),
            source_sha256=_str(d, "source_sha256"),
            checks=ImportChecks.from_json(_obj(d, "checks")),
            proposed_at=_str(d, "proposed_at"),
            reason=_str(d, "reason"),
            decided_by=_opt_str(d, "decided_by"),
            decided_at=_opt_str(d, "decided_at"),
            epsilon_total=_opt_float(d, "epsilon_total"),
        )
