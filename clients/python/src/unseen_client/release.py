"""A downloaded release bundle: the signed release document, the ledger
entries that recorded it with their inclusion proofs, and the signed
checkpoint, exactly as the service sent them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from .canonical import JsonError, loads
from .tables import ReleasedColumn, columns_of, table_to_arrow, table_to_pandas
from .verify import BUNDLE_FORMAT, PublicKeyLike, ReleaseProof, verify_bundle

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    import pyarrow  # type: ignore[import-untyped]

__all__ = ["Release"]


class Release:
    """A release bundle (``unseen-release-bundle/1``).

    The bytes are kept as downloaded, so :meth:`save` writes a file that
    ``unseen release verify FILE --public-key ledger.pub`` accepts, and
    :meth:`verify` checks them here with the same rules."""

    def __init__(self, data: str | bytes) -> None:
        self._bytes = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        try:
            parsed = loads(self._bytes)
        except JsonError as e:
            raise ValueError(f"not a release bundle: {e}") from None
        if not isinstance(parsed, dict) or parsed.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"not a release bundle: the format is not {BUNDLE_FORMAT}")
        document = parsed.get("document")
        if not isinstance(document, dict):
            raise ValueError("not a release bundle: it has no document")
        self._bundle: Dict[str, Any] = parsed
        self._document: Dict[str, Any] = document

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Release":
        """Reads a bundle file (as :meth:`save` or ``unseen release download``
        wrote it)."""
        return cls(Path(path).read_bytes())

    # --- what the bundle says -----------------------------------------------------

    @property
    def data(self) -> bytes:
        """The bundle's bytes, as downloaded."""
        return self._bytes

    @property
    def bundle(self) -> Dict[str, Any]:
        return self._bundle

    @property
    def document(self) -> Dict[str, Any]:
        """The signed release document."""
        return self._document

    def _field(self, key: str) -> Optional[str]:
        v = self._document.get(key)
        return v if isinstance(v, str) else None

    @property
    def id(self) -> str:
        return self._field("release") or ""

    @property
    def output(self) -> str:
        return self._field("output") or ""

    @property
    def output_name(self) -> str:
        return self._field("output_name") or ""

    @property
    def job(self) -> str:
        return self._field("job") or ""

    @property
    def grant(self) -> str:
        return self._field("grant") or ""

    @property
    def dataset(self) -> str:
        return self._field("dataset") or ""

    @property
    def sql(self) -> Optional[str]:
        """The query, for a release of a query's output."""
        return self._field("sql")

    @property
    def module_sha256(self) -> Optional[str]:
        """The module, for a release of a module job's output."""
        return self._field("module_sha256")

    @property
    def output_sha256(self) -> str:
        return self._field("output_sha256") or ""

    @property
    def epsilon_spent(self) -> float:
        v = self._document.get("epsilon_spent")
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0

    @property
    def reviewer(self) -> str:
        return self._field("reviewer") or ""

    @property
    def approvers(self) -> Tuple[str, ...]:
        v = self._document.get("approvers")
        return tuple(x for x in v if isinstance(x, str)) if isinstance(v, list) else ()

    @property
    def approved_at(self) -> str:
        return self._field("approved_at") or ""

    @property
    def public_key(self) -> str:
        """The ledger key the bundle names (hex). Verify against a key you
        obtained yourself, not this one."""
        ledger = self._bundle.get("ledger")
        v = ledger.get("public_key") if isinstance(ledger, dict) else None
        return v if isinstance(v, str) else ""

    @property
    def table(self) -> Dict[str, Any]:
        """The released table as the document holds it."""
        v = self._document.get("table")
        return v if isinstance(v, dict) else {"rows": 0, "columns": []}

    @property
    def columns(self) -> List[ReleasedColumn]:
        return columns_of(self.table)

    # --- conversions ----------------------------------------------------------------

    def to_pandas(self) -> "pandas.DataFrame":
        """The released table; each column of noisy values ``x`` comes with
        its confidence interval as ``x_lower`` and ``x_upper``."""
        df = table_to_pandas(self.table)
        df.attrs["unseen_release"] = self.id
        return df

    def to_arrow(self) -> "pyarrow.Table":
        """The released table as Arrow, the same columns as :meth:`to_pandas`;
        the schema's metadata names the release and its output hash."""
        return table_to_arrow(
            self.table,
            metadata={"unseen.release": self.id, "unseen.output_sha256": self.output_sha256},
        )

    # --- files and proofs -------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Writes the bundle's bytes to ``path`` (refusing to replace a file
        unless ``overwrite``)."""
        target = Path(path)
        mode = "wb" if overwrite else "xb"
        with open(target, mode) as f:
            f.write(self._bytes)
            f.flush()
            os.fsync(f.fileno())
        return target

    def verify(self, public_key: PublicKeyLike) -> ReleaseProof:
        """Proves the bundle offline with the ledger's public key (hex,
        bytes, a ``ledger.pub`` path or a key object); raises
        :class:`~unseen_client.VerificationError` naming the first broken
        link."""
        return verify_bundle(self._bytes, public_key)

    def __repr__(self) -> str:
        rows = self.table.get("rows")
        return f"Release(id={self.id!r}, output={self.output!r}, grant={self.grant!r}, rows={rows!r})"
