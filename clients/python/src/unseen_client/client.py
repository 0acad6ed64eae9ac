"""The HTTP client: one :class:`Client` per URL and bearer token."""

from __future__ import annotations

import base64
import os
import re
import time
from pathlib import Path
from urllib.parse import quote
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import httpx

from .errors import JobWaitTimeout, Refused, TransportError, UnseenError, error_for_status
from .models import (
    Application,
    DryRun,
    Grant,
    GrantBudget,
    GrantRequest,
    GrantUsage,
    Import,
    JobCancelled,
    JobQueued,
    JobView,
    LedgerVerified,
    Me,
    ModuleUploaded,
    Narrowing,
    Outcome,
    OutputShown,
    Ready,
    ReviewDecision,
    ReviewItem,
    Dataset,
    column_named_in,
)
from .release import Release

__all__ = ["Client", "ModuleLike"]

#: A module to run: the id an upload returned (64 hex digits), the wasm
#: bytes, or the path of a ``.wasm`` file (uploaded first).
ModuleLike = Union[str, bytes, "os.PathLike[str]"]

_MODULE_ID = re.compile(r"^[0-9a-f]{64}$")
_DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=10.0)


class Client:
    """A connection to an Unseen service as one user.

    ``url`` is the service's base URL (``http://127.0.0.1:8787``), ``token``
    the user's bearer token. The token is sent with every request and
    appears in no exception, log line or ``repr``.

    A synchronous query or job waits for its answer; ``timeout`` bounds each
    request (seconds, or an :class:`httpx.Timeout`). ``verify`` is passed to
    httpx: ``True``, ``False`` or the path of CA certificates for an HTTPS
    service under a private CA.

    A run the policy refuses raises :class:`Refused`. The service's answer
    to a refused run names the reason; with ``explain_refusals`` (the
    default) the client then dry-runs the same query, which spends nothing,
    to learn the rule as well.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: Union[float, httpx.Timeout] = _DEFAULT_TIMEOUT,
        verify: Union[bool, str] = True,
        explain_refusals: bool = True,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        if not isinstance(token, str) or not token.strip():
            raise ValueError("a token is needed: the one `unseen user add` or `unseen user token` printed")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the URL must start with http:// or https://, not {url[:40]!r}")
        self._url = url.rstrip("/")
        self.explain_refusals = explain_refusals
        self._http = httpx.Client(
            base_url=self._url,
            headers={"Authorization": f"Bearer {token.strip()}", "Accept": "application/json"},
            timeout=timeout,
            verify=verify,
            transport=transport,
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> "Client":
        """A client from ``UNSEEN_SERVER`` and ``UNSEEN_TOKEN`` (the
        variables the command line reads), and ``UNSEEN_CA_CERT`` if set."""
        url = os.environ.get("UNSEEN_SERVER")
        token = os.environ.get("UNSEEN_TOKEN")
        if not url:
            raise ValueError("set UNSEEN_SERVER to the service's URL, like http://127.0.0.1:8787")
        if not token:
            raise ValueError("set UNSEEN_TOKEN to your bearer token")
        ca = os.environ.get("UNSEEN_CA_CERT")
        if ca and "verify" not in kwargs:
            kwargs["verify"] = ca
        return cls(url, token, **kwargs)

    @property
    def url(self) -> str:
        return self._url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(url={self._url!r})"

    # --- transport --------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: Optional[bytes] = None,
        params: Optional[Mapping[str, str]] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, json=json, content=content, params=params, headers=headers)
        except httpx.TimeoutException as e:
            raise TransportError(f"{method} {path}: no answer in time ({type(e).__name__})") from None
        except httpx.HTTPError as e:
            # httpx's messages name the URL, never the headers.
            raise TransportError(f"{method} {path}: cannot reach {self._url}: {e}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise error_for_status(response.status_code, body, response.text)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Dict[str, Any]:
        response = self._request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise UnseenError(f"{method} {path}: the answer is not JSON", status=response.status_code) from None
        if not isinstance(body, dict):
            raise UnseenError(f"{method} {path}: the answer is not a JSON object", status=response.status_code)
        return body

    @staticmethod
    def _seg(value: str) -> str:
        """One path segment: ids never hold a slash, so refuse one rather
        than reach another route."""
        if not value or "/" in value or value in (".", ".."):
            raise ValueError(f"{value!r} is not an id")
        return quote(value, safe="")

    # --- service and identity -----------------------------------------------------

    def health(self) -> bool:
        """``GET /v1/health`` (liveness)."""
        return bool(self._json("GET", "/v1/health").get("ok"))

    def ready(self) -> Ready:
        """``GET /v1/ready``: store, ledger and keys checked. A service that
        is not ready answers 503, raised as :class:`Unavailable`."""
        return Ready.from_json(self._json("GET", "/v1/ready"))

    def me(self) -> Me:
        """Who the token belongs to, and their role."""
        return Me.from_json(self._json("GET", "/v1/me"))

    def datasets(self) -> List[Dataset]:
        body = self._json("GET", "/v1/datasets")
        return [Dataset.from_json(d) for d in body.get("datasets", []) if isinstance(d, dict)]

    # --- grants and budgets -------------------------------------------------------

    def grants(self) -> List[Grant]:
        """The grants the caller may see (a developer: those they are
        designated on)."""
        body = self._json("GET", "/v1/grants")
        return [Grant.from_json(g) for g in body.get("grants", []) if isinstance(g, dict)]

    def grant(self, grant: str) -> Grant:
        body = self._json("GET", f"/v1/grants/{self._seg(grant)}")
        return Grant.from_json(body.get("grant") or {})

    def budget(self, grant: str) -> GrantBudget:
        """Epsilon spent and left under ``grant``, and at each layer above
        it (dataset, developer)."""
        return GrantBudget.from_json(self._json("GET", f"/v1/grants/{self._seg(grant)}/budget"))

    def usage(self, grant: str) -> GrantUsage:
        """Runs, downloads and metering of ``grant``."""
        body = self._json("GET", f"/v1/grants/{self._seg(grant)}/usage")
        return GrantUsage.from_json(body.get("usage") or {})

    # --- grant applications -------------------------------------------------------

    def _application(self, method: str, path: str, **kwargs: Any) -> Application:
        body = self._json(method, path, **kwargs)
        return Application.from_json(body.get("application") or {})

    def applications(self) -> List[Application]:
        """Grant applications the caller may read: a developer their own,
        admins and auditors all of them."""
        body = self._json("GET", "/v1/applications")
        return [Application.from_json(a) for a in body.get("applications", []) if isinstance(a, dict)]

    def application(self, application: str) -> Application:
        """One application with its history. Another developer's is
        :class:`NotFound`."""
        return self._application("GET", f"/v1/applications/{self._seg(application)}")

    def apply(self, request: GrantRequest) -> Application:
        """A developer applies for a grant with the terms ``request``,
        naming its one ``scenario``. Leave ``request.developer`` empty: the
        grant is for the applicant. The application is ``submitted``; an
        admin pre-reviews it, then decides it."""
        return self._application("POST", "/v1/applications", json=_terms(request))

    def amend_application(self, application: str, request: GrantRequest) -> Application:
        """The applicant amends a ``returned`` application with new terms;
        it is ``submitted`` again. Any other status is :class:`Conflict`."""
        return self._application(
            "POST", f"/v1/applications/{self._seg(application)}/amend", json=_terms(request)
        )

    def withdraw_application(self, application: str, reason: str = "") -> Application:
        """The applicant withdraws an application not yet decided."""
        return self._application(
            "POST", f"/v1/applications/{self._seg(application)}/withdraw", json={"reason": reason}
        )

    def pre_review_application(self, application: str, complete: bool, reason: str = "") -> Application:
        """An admin's completeness check of a ``submitted`` application:
        ``complete`` sends it to review (``in_review``); otherwise it is
        ``returned`` to its applicant, and ``reason`` (then needed) says
        what is missing."""
        body = {"complete": bool(complete), "reason": reason}
        return self._application("POST", f"/v1/applications/{self._seg(application)}/pre-review", json=body)

    def decide_application(
        self,
        application: str,
        approve: bool,
        reason: str,
        *,
        narrowing: Optional[Narrowing] = None,
    ) -> Application:
        """An admin's decision on an application ``in_review``, with the
        reasons its applicant is told (always needed). Approval issues the
        grant (``Application.grant``) with the terms asked for, narrowed by
        ``narrowing`` (``Application.granted``); a narrowing may only
        narrow, and a rejection takes none (:class:`BadRequest`)."""
        body: Dict[str, Any] = {"approve": bool(approve), "reason": reason}
        if narrowing is not None:
            body["narrowing"] = narrowing.to_json()
        return self._application("POST", f"/v1/applications/{self._seg(application)}/decision", json=body)

    def application_feedback(self, application: str, rating: int, text: str) -> Application:
        """The applicant's feedback on the use of the grant an ``approved``
        application obtained: ``rating`` from 1 (poor) to 5 (good) and a
        text of 1 to 2000 characters."""
        body = {"rating": rating, "text": text}
        return self._application("POST", f"/v1/applications/{self._seg(application)}/feedback", json=body)

    # --- imports ------------------------------------------------------------------

    def imports(self) -> List[Import]:
        """Imports the caller may read: a developer their own proposals,
        admins and auditors all of them."""
        body = self._json("GET", "/v1/imports")
        return [Import.from_json(i) for i in body.get("imports", []) if isinstance(i, dict)]

    def propose_import(
        self,
        grant: str,
        name: str,
        manifest: Union[str, "os.PathLike[str]"],
        parquet: Union[bytes, str, "os.PathLike[str]"],
    ) -> Import:
        """A developer of ``grant`` proposes outside data for it: the
        Parquet file ``parquet`` (its bytes or its path) as dataset
        ``name``, described by ``manifest`` (the TOML text, or a path
        object of the file; its ``name`` is ``name``). Its privacy unit
        must be the grant's, its key column prohibited and no column open.
        The keys are checked (format with check characters, no repeats)
        and the file quarantined encrypted: the import is ``proposed``
        until an admin decides it."""
        manifest_text = Path(manifest).read_text(encoding="utf-8") if isinstance(manifest, os.PathLike) else manifest
        if not isinstance(manifest_text, str):
            raise TypeError("a manifest is its TOML text or the path of its file")
        data = parquet if isinstance(parquet, (bytes, bytearray)) else Path(parquet).read_bytes()
        body = {
            "grant": grant,
            "name": name,
            "manifest": manifest_text,
            "parquet_base64": base64.b64encode(bytes(data)).decode("ascii"),
        }
        raw = self._json("POST", "/v1/imports", json=body)
        return Import.from_json(raw.get("import") or {})

    def decide_import(
        self,
        import_id: str,
        approve: bool,
        reason: str,
        *,
        epsilon: Optional[float] = None,
    ) -> Import:
        """An admin's decision on a ``proposed`` import, with the reasons
        (always needed). Approval registers it as a dataset joined to its
        grant only, with its own budget layer of ``epsilon`` (needed to
        approve); rejection deletes the quarantined file."""
        body: Dict[str, Any] = {"approve": bool(approve), "reason": reason}
        if epsilon is not None:
            body["epsilon"] = epsilon
        raw = self._json("POST", f"/v1/imports/{self._seg(import_id)}/decision", json=body)
        return Import.from_json(raw.get("import") or {})

    # --- queries ------------------------------------------------------------------

    def _query_body(
        self, grant: str, sql: str, udf_modules: Iterable[ModuleLike], inputs: Iterable[str], dry_run: bool
    ) -> Dict[str, Any]:
        body: Dict[str, Any] = {"grant": grant, "sql": sql}
        udfs = [self._module_id(m, "udf") for m in udf_modules]
        if udfs:
            body["udf_modules"] = udfs
        inputs = list(inputs)
        if inputs:
            body["inputs"] = inputs
        if dry_run:
            body["dry_run"] = True
        return body

    def dry_run(
        self,
        grant: str,
        sql: str,
        *,
        udf_modules: Sequence[ModuleLike] = (),
        inputs: Sequence[str] = (),
    ) -> DryRun:
        """The verdict on ``sql`` under ``grant`` without reading data or
        spending: admitted or not (with the rule), the epsilon a run would
        cost and the expected accuracy. Call :meth:`DryRun.raise_if_refused`
        to turn a refusal into :class:`Refused`."""
        body = self._query_body(grant, sql, udf_modules, inputs, dry_run=True)
        return DryRun.from_json(self._json("POST", "/v1/queries", json=body))

    def query(
        self,
        grant: str,
        sql: str,
        *,
        udf_modules: Sequence[ModuleLike] = (),
        inputs: Sequence[str] = (),
    ) -> Outcome:
        """Runs one SQL statement under ``grant``. Its output goes to
        quarantine (``Outcome.output``); a reviewer's approval makes it a
        release to download. ``udf_modules`` are UDF modules (ids, bytes or
        paths) whose functions the query may call; ``inputs`` earlier
        releases it may read as tables ``release_<id>``.

        Raises :class:`Refused` when the policy refuses the query, with its
        rule and the column to blame."""
        udf_ids = [self._module_id(m, "udf") for m in udf_modules]
        body = self._query_body(grant, sql, udf_ids, inputs, dry_run=False)
        raw = self._json("POST", "/v1/queries", json=body)
        outcome = Outcome.from_json(raw)
        if outcome.status == "refused":
            raise self._refusal(raw, outcome, grant, sql, udf_ids, list(inputs))
        return outcome

    def _refusal(
        self,
        raw: Mapping[str, Any],
        outcome: Outcome,
        grant: str,
        sql: str,
        udf_ids: List[str],
        inputs: List[str],
    ) -> Refused:
        reason = outcome.reason or "the query was refused"
        rule = raw.get("rule") if isinstance(raw.get("rule"), str) else None
        column = raw.get("column") if isinstance(raw.get("column"), str) else None
        if rule is None and self.explain_refusals:
            # The answer to a run carries only the reason; a dry run of the
            # same query is decided the same way and names the rule.
            try:
                verdict = self.dry_run(grant, sql, udf_modules=udf_ids, inputs=inputs)
            except UnseenError:
                verdict = None
            if verdict is not None and not verdict.admitted:
                rule = verdict.rule
                column = column or verdict.column
        return Refused(reason, rule=rule, column=column or column_named_in(reason), job=outcome.job or None)

    # --- modules and jobs ---------------------------------------------------------

    def upload_module(self, wasm: Union[bytes, "os.PathLike[str]", str], kind: str = "job") -> ModuleUploaded:
        """Uploads a job module (``kind="job"``) or a UDF module
        (``kind="udf"``): validated, compiled and kept by its SHA-256, which
        is its id."""
        if kind not in ("job", "udf"):
            raise ValueError("kind is `job` or `udf`")
        data = wasm if isinstance(wasm, (bytes, bytearray)) else Path(wasm).read_bytes()
        body = self._json(
            "POST",
            "/v1/modules",
            params={"kind": kind},
            content=bytes(data),
            headers={"Content-Type": "application/wasm"},
        )
        return ModuleUploaded.from_json(body)

    def _module_id(self, module: ModuleLike, kind: str) -> str:
        if isinstance(module, str) and _MODULE_ID.match(module):
            return module
        if isinstance(module, (bytes, bytearray, str)) or isinstance(module, os.PathLike):
            return self.upload_module(module, kind=kind).module
        raise TypeError("a module is its id, its wasm bytes or the path of its .wasm file")

    def _job_body(
        self,
        grant: str,
        module: ModuleLike,
        udf_modules: Sequence[ModuleLike],
        params: Optional[Mapping[str, str]],
        inputs: Sequence[str],
        wait: bool,
    ) -> Dict[str, Any]:
        body: Dict[str, Any] = {"grant": grant, "module": self._module_id(module, "job")}
        udfs = [self._module_id(m, "udf") for m in udf_modules]
        if udfs:
            body["udf_modules"] = udfs
        if params:
            body["params"] = {str(k): str(v) for k, v in params.items()}
        if inputs:
            body["inputs"] = list(inputs)
        if wait:
            body["wait"] = True
        return body

    def submit_job(
        self,
        grant: str,
        module: ModuleLike,
        *,
        udf_modules: Sequence[ModuleLike] = (),
        params: Optional[Mapping[str, str]] = None,
        inputs: Sequence[str] = (),
    ) -> JobQueued:
        """Queues a job: ``module`` (an id, wasm bytes or a ``.wasm`` path;
        uploaded when not an id) runs under ``grant`` with the UDF modules
        its queries may call, its parameters and the earlier releases it may
        read. Follow it with :meth:`job` or :meth:`wait_for_job`."""
        body = self._job_body(grant, module, udf_modules, params, inputs, wait=False)
        return JobQueued.from_json(self._json("POST", "/v1/jobs", json=body))

    def run_job(
        self,
        grant: str,
        module: ModuleLike,
        *,
        udf_modules: Sequence[ModuleLike] = (),
        params: Optional[Mapping[str, str]] = None,
        inputs: Sequence[str] = (),
    ) -> Outcome:
        """Like :meth:`submit_job`, but waits for the job to end and returns
        its outcome (``finished``, ``stopped`` with ``stopped_by``, or
        ``refused`` with the reason)."""
        body = self._job_body(grant, module, udf_modules, params, inputs, wait=True)
        return Outcome.from_json(self._json("POST", "/v1/jobs", json=body))

    def job(self, job: str) -> JobView:
        body = self._json("GET", f"/v1/jobs/{self._seg(job)}")
        return JobView.from_json(body.get("job") or {})

    def jobs(self, grant: Optional[str] = None) -> List[JobView]:
        """Jobs the caller may see (a developer: their own), newest first."""
        body = self._json("GET", "/v1/jobs", params={"grant": grant} if grant else None)
        return [JobView.from_json(j) for j in body.get("jobs", []) if isinstance(j, dict)]

    def wait_for_job(self, job: str, *, timeout: float = 300.0, interval: float = 0.25) -> JobView:
        """Reads the job's status until it has ended (``finished``,
        ``stopped`` or ``refused``); raises :class:`JobWaitTimeout` after
        ``timeout`` seconds (the job goes on).

        A module job's end can be visible a moment before its outcome
        output is quarantined; the view returned waits (up to a second)
        for that output, so ``outcome`` is set for every module job whose
        guest ran."""
        deadline = time.monotonic() + timeout
        pause = min(interval, 0.05)
        settle: Optional[float] = None
        while True:
            view = self.job(job)
            if view.ended:
                unsettled = view.module_sha256 is not None and view.status != "refused" and view.outcome is None
                if not unsettled:
                    return view
                settle = settle if settle is not None else time.monotonic() + 1.0
                if time.monotonic() >= settle:
                    return view
                time.sleep(0.02)
                continue
            if time.monotonic() >= deadline:
                raise JobWaitTimeout(f"job `{job}` is still {view.status} after {timeout:g} s", job=job)
            time.sleep(pause)
            pause = min(pause * 2, interval)

    def cancel_job(self, job: str, reason: str = "") -> JobCancelled:
        body = {"reason": reason} if reason else {}
        return JobCancelled.from_json(self._json("POST", f"/v1/jobs/{self._seg(job)}/cancel", json=body))

    # --- review (reviewers) -------------------------------------------------------

    def review_queue(self) -> List[ReviewItem]:
        """What awaits review, oldest first."""
        body = self._json("GET", "/v1/reviews")
        return [ReviewItem.from_json(o) for o in body.get("outputs", []) if isinstance(o, dict)]

    def output(self, output: str) -> OutputShown:
        """A quarantined output with its findings, as a reviewer sees it."""
        return OutputShown.from_json(self._json("GET", f"/v1/outputs/{self._seg(output)}"))

    def approve(self, output: str, reason: str) -> ReviewDecision:
        """Approves an output; the last approval the grant needs signs the
        release (``ReviewDecision.release``). Nobody approves a job they
        submitted (:class:`Forbidden`)."""
        return ReviewDecision.from_json(
            self._json("POST", f"/v1/outputs/{self._seg(output)}/approve", json={"reason": reason})
        )

    def reject(self, output: str, reason: str) -> ReviewDecision:
        return ReviewDecision.from_json(
            self._json("POST", f"/v1/outputs/{self._seg(output)}/reject", json={"reason": reason})
        )

    # --- releases and the ledger --------------------------------------------------

    def download_release(self, release: str) -> Release:
        """Downloads an approved release as its offline-verifiable bundle.
        Each call counts against the grant's download limit."""
        response = self._request("GET", f"/v1/releases/{self._seg(release)}")
        try:
            return Release(response.content)
        except ValueError as e:
            raise UnseenError(f"release `{release}`: {e}", status=response.status_code) from None

    def public_key(self) -> str:
        """The ledger's Ed25519 public key, 64 hex digits (what
        ``ledger.pub`` holds). For an independent check, obtain it from the
        data provider rather than from the service that signs."""
        key = self._json("GET", "/v1/ledger/public-key").get("public_key")
        if not isinstance(key, str):
            raise UnseenError("the service sent no public key")
        return key

    def checkpoint(self) -> str:
        """The ledger's current signed checkpoint (C2SP signed note);
        admins, reviewers and auditors."""
        note = self._json("GET", "/v1/ledger/checkpoint").get("checkpoint")
        if not isinstance(note, str):
            raise UnseenError("the service sent no checkpoint")
        return note

    def verify_ledger(self) -> LedgerVerified:
        """Has the service verify its whole ledger (admins and auditors)."""
        return LedgerVerified.from_json(self._json("GET", "/v1/ledger/verify"))


def _terms(request: GrantRequest) -> Dict[str, Any]:
    if not isinstance(request, GrantRequest):
        raise TypeError("the terms are a GrantRequest")
    return request.to_json()
