"""Exceptions. Every error the service answers becomes one of these, chosen
by its HTTP status; a query the policy refuses becomes :class:`Refused`
with the rule and the column. No exception ever holds the bearer token."""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

__all__ = [
    "UnseenError",
    "TransportError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "MethodNotAllowed",
    "Conflict",
    "Gone",
    "PayloadTooLarge",
    "Refused",
    "Unprocessable",
    "Unavailable",
    "ServerError",
    "JobWaitTimeout",
    "VerificationError",
    "error_for_status",
]


class UnseenError(Exception):
    """Anything that went wrong talking to the service or checking what it
    sent. ``status`` is the HTTP status when the service answered with an
    error, else ``None``."""

    def __init__(self, message: str, *, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"{self.message} (HTTP {self.status})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, message={self.message!r})"


class TransportError(UnseenError):
    """The service could not be reached, or the connection broke."""


class BadRequest(UnseenError):
    """400: a malformed body, wrong types or an invalid argument."""


class Unauthorized(UnseenError):
    """401: the token is missing, unknown, rotated or its user disabled."""


class Forbidden(UnseenError):
    """403: the wrong role, or the grant cannot be used for this (not
    designated, revoked, expired, outside its window, a limit used up),
    or a reviewer deciding their own job."""


class NotFound(UnseenError):
    """404: no such grant, job, output, release or route."""


class MethodNotAllowed(UnseenError):
    """405: the route does not take this method."""


class Conflict(UnseenError):
    """409: it exists already, the output was decided already, findings
    block approval, or the budget is short."""


class Gone(UnseenError):
    """410: the dataset's data key was destroyed."""


class PayloadTooLarge(UnseenError):
    """413: the body is over the route's limit."""


class Refused(UnseenError):
    """The service refused the work: the policy refused a query (``rule``
    names the policy's rule, ``column`` the ``table.column`` to blame when
    there is one, ``job`` the job that recorded the refusal), or a manifest
    or module was refused (HTTP 422, see :class:`Unprocessable`)."""

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        rule: Optional[str] = None,
        column: Optional[str] = None,
        job: Optional[str] = None,
    ) -> None:
        super().__init__(message, status=status)
        self.rule = rule
        self.column = column
        self.job = job

    @property
    def reason(self) -> str:
        """The service's explanation and what to do instead."""
        return self.message

    def __str__(self) -> str:
        named = [f"{k}: {v}" for k, v in (("rule", self.rule), ("column", self.column)) if v]
        text = super().__str__()
        return f"[{', '.join(named)}] {text}" if named else text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(rule={self.rule!r}, column={self.column!r}, "
            f"job={self.job!r}, status={self.status!r}, message={self.message!r})"
        )


class Unprocessable(Refused):
    """422: a manifest with mistakes, a module the sandbox refused, or a
    query the policy refused."""


class Unavailable(UnseenError):
    """503: the queue is full or the service is stopping (retry), or its
    store, ledger or disk failed."""


class ServerError(UnseenError):
    """Any other 5xx answer."""


class JobWaitTimeout(UnseenError, TimeoutError):
    """A job did not end within the time waited for it (it goes on)."""

    def __init__(self, message: str, *, job: str) -> None:
        super().__init__(message)
        self.job = job


class VerificationError(UnseenError):
    """A release bundle did not verify. ``link`` names the first link of
    the proof that broke (the release signature, the output bytes, a
    ledger entry, ...), ``detail`` how."""

    def __init__(self, link: str, detail: str) -> None:
        super().__init__(f"bundle verification failed at {link}: {detail}")
        self.link = link
        self.detail = detail

    def __repr__(self) -> str:
        return f"VerificationError(link={self.link!r}, detail={self.detail!r})"


_BY_STATUS: Dict[int, Type[UnseenError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    422: Unprocessable,
    503: Unavailable,
}


def error_for_status(status: int, body: Any, fallback_text: str = "") -> UnseenError:
    """The exception for an error answer: ``{"error": {"status", "message"}}``
    (``rule`` and ``column`` are read too when the service sends them)."""
    detail: Dict[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        detail = body["error"]
    message = detail.get("message")
    if not isinstance(message, str) or not message:
        message = fallback_text.strip()[:500] or f"the service answered HTTP {status}"
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else UnseenError
    if issubclass(cls, Refused):
        rule = detail.get("rule")
        column = detail.get("column")
        return cls(
            message,
            status=status,
            rule=rule if isinstance(rule, str) else None,
            column=column if isinstance(column, str) else None,
        )
    return cls(message, status=status)
