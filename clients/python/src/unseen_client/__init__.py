"""A typed client for the Unseen HTTP API: data that is used but not seen.

>>> from unseen_client import Client
>>> client = Client("http://127.0.0.1:8787", token)          # doctest: +SKIP
>>> client.query(grant, "SELECT district, COUNT(*) FROM residents GROUP BY district")  # doctest: +SKIP

See the package README for a walk through grants, queries, jobs, releases
and their offline verification.
"""

from .client import Client, ModuleLike
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    JobWaitTimeout,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Refused,
    ServerError,
    TransportError,
    Unauthorized,
    Unavailable,
    UnseenError,
    Unprocessable,
    VerificationError,
)
from .models import (
    ENDED,
    Application,
    ApplicationStatus,
    ApplicationStep,
    BudgetLayer,
    Dataset,
    DryRun,
    Grant,
    GrantBudget,
    GrantRequest,
    GrantUsage,
    Import,
    ImportChecks,
    ImportStatus,
    JobCancelled,
    JobQueued,
    JobStatus,
    JobView,
    LedgerVerified,
    Me,
    ModuleUploaded,
    Narrowing,
    Outcome,
    OutcomeReview,
    OutputShown,
    Ready,
    ReviewDecision,
    ReviewItem,
)
from .release import Release
from .tables import ReleasedColumn, table_to_arrow, table_to_pandas
from .verify import ReleaseProof, load_public_key, verify_bundle

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ModuleLike",
    "Release",
    "ReleaseProof",
    "ReleasedColumn",
    "verify_bundle",
    "load_public_key",
    "table_to_pandas",
    "table_to_arrow",
    # errors
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
    # records
    "ENDED",
    "JobStatus",
    "Me",
    "Ready",
    "Dataset",
    "Grant",
    "BudgetLayer",
    "GrantBudget",
    "GrantUsage",
    "DryRun",
    "Outcome",
    "OutcomeReview",
    "JobQueued",
    "JobView",
    "JobCancelled",
    "ModuleUploaded",
    "ReviewItem",
    "OutputShown",
    "ReviewDecision",
    "LedgerVerified",
    "ApplicationStatus",
    "GrantRequest",
    "Application",
    "ApplicationStep",
    "Narrowing",
    "ImportStatus",
    "Import",
    "ImportChecks",
]
