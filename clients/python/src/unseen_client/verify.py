"""Offline verification of release bundles (``unseen-release-bundle/1``)
with nothing but the ledger's public key, link by link as
``unseen release verify BUNDLE --public-key ledger.pub`` does:

1. the key identity the bundle names is the key given;
2. the C2SP signed checkpoint carries a valid Ed25519 signature by it;
3. the release signature covers ``"unseen release v1\\n"`` followed by the
   canonical JSON of the document;
4. the released table hashes (SHA-256 of its binary encoding) to the
   document's ``output_sha256``;
5. each ledger entry in the bundle is canonical and included under the
   signed checkpoint (RFC 9162 audit path);
6. the ``release.signed`` entry records the same output, hashes, module,
   query, inputs, policy, spend and reviewer as the document, and every
   approver named has a ``review.approved`` entry, and no others.

The first link that breaks raises :class:`VerificationError` naming it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .canonical import JsonError, canonical_bytes, loads, same_value
from .errors import VerificationError

__all__ = [
    "BUNDLE_FORMAT",
    "ORIGIN",
    "PublicKeyLike",
    "ReleaseProof",
    "LedgerEntry",
    "load_public_key",
    "verify_bundle",
    "verifier_key",
    "open_checkpoint",
    "parse_entry_line",
    "encode_table",
]

BUNDLE_FORMAT = "unseen-release-bundle/1"
#: The origin line and key name of the ledger's checkpoints.
ORIGIN = "unseen.local/ledger"
_RELEASE_CONTEXT = b"unseen release v1\n"
_ALG_ED25519 = 0x01

PublicKeyLike = Union[str, bytes, "os.PathLike[str]", Ed25519PublicKey]


@dataclass(frozen=True)
class ReleaseProof:
    """What a verified bundle proves."""

    release: str
    #: Index of the ``release.signed`` entry in the ledger.
    ledger_index: int
    #: Size of the signed checkpoint the entries are included under.
    tree_size: int
    #: Merkle root of that checkpoint, hex.
    root: str
    output_sha256: str
    module_sha256: str
    epsilon_spent: float
    reviewer: str
    approvers: Tuple[str, ...]


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger entry, parsed from its canonical line."""

    index: int
    prev: str
    time: str
    kind: str
    actor: str
    body: Any


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes


def _broken(link: str, detail: str) -> VerificationError:
    return VerificationError(link, detail)


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


def load_public_key(key: PublicKeyLike) -> Ed25519PublicKey:
    """The ledger key from 64 hex characters (the content of ``ledger.pub``
    or of ``GET /v1/ledger/public-key``), 32 raw bytes, a path to a file
    holding the hex form, or a key object."""
    if isinstance(key, Ed25519PublicKey):
        return key
    raw: Optional[bytes] = None
    if isinstance(key, (bytes, bytearray)):
        data = bytes(key)
        if len(data) == 32:
            raw = data
        else:
            key = data.decode("ascii", errors="replace")
    if raw is None and isinstance(key, str):
        text = key.strip()
        if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
            raw = bytes.fromhex(text)
        else:
            key = Path(key)
    if raw is None and isinstance(key, os.PathLike):
        text = Path(key).read_text(encoding="ascii").strip()
        if len(text) != 64:
            raise ValueError(
                f"{os.fspath(key)!r} does not hold an Ed25519 public key (64 hex characters)"
            )
        raw = bytes.fromhex(text)
    if raw is None:
        raise TypeError("a public key is 64 hex characters, 32 bytes, a path or a key object")
    return Ed25519PublicKey.from_public_bytes(raw)


def _raw(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _verify(key: Ed25519PublicKey, message: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


def _b64decode(text: str) -> Optional[bytes]:
    """Standard base64 with canonical padding and no stray bits, or None."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


# --- C2SP signed notes and checkpoints -------------------------------------------


def _key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([_ALG_ED25519]) + public_key).digest()[:4]


def _check_name(name: str) -> bool:
    return bool(name) and not any(c.isspace() for c in name) and "+" not in name


def verifier_key(name: str, key: Ed25519PublicKey) -> str:
    """The C2SP verifier key ``<name>+<hex key id>+<base64(0x01 || key)>``."""
    raw = _raw(key)
    return "{}+{}+{}".format(
        name,
        _key_id(name, raw).hex(),
        base64.b64encode(bytes([_ALG_ED25519]) + raw).decode("ascii"),
    )


def _open_note(note: str, name: str, key: Ed25519PublicKey) -> str:
    split = note.rfind("\n\n")
    if split < 0:
        raise ValueError("not a signed note: there is no blank line before the signatures")
    text, sigs = note[: split + 1], note[split + 2 :]
    if "\n\n" in text or text.startswith("\n"):
        raise ValueError("not a signed note: the text contains a blank line")
    if not sigs.endswith("\n"):
        raise ValueError("not a signed note: the last signature line does not end with a newline")
    raw = _raw(key)
    want = _key_id(name, raw)
    found = False
    for line in sigs[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise ValueError("not a signed note: a signature line does not start with `\u2014 `")
        sig_name, space, b64 = line[2:].partition(" ")
        if not space:
            raise ValueError("not a signed note: a signature line has no space between name and signature")
        if not _check_name(sig_name):
            raise ValueError("not a signed note: a signature line has an invalid key name")
        blob = _b64decode(b64)
        if blob is None:
            raise ValueError("not a signed note: a signature is not valid base64")
        if len(blob) < 5:
            raise ValueError("not a signed note: a signature is too short")
        if sig_name != name or blob[:4] != want:
            continue
        if not _verify(key, text.encode("utf-8"), blob[4:]):
            raise ValueError(
                f"the signature by key `{name}` does not verify; the checkpoint text was altered after signing"
            )
        found = True
    if not found:
        raise ValueError(f"no signature by key `{name}` with id {want.hex()}")
    return text


def open_checkpoint(note: str, key: PublicKeyLike, origin: str = ORIGIN) -> Checkpoint:
    """Checks a signed checkpoint and returns the tree head it carries."""
    pk = load_public_key(key)
    text = _open_note(note, origin, pk)
    if not text.endswith("\n"):
        raise ValueError("not a checkpoint body: it does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) != 3:
        raise ValueError("not a checkpoint body: it does not have exactly three lines")
    cp_origin, size_text, root_text = lines
    if not cp_origin:
        raise ValueError("not a checkpoint body: the origin line is empty")
    if not (size_text.isascii() and size_text.isdigit()) or (size_text != "0" and size_text.startswith("0")):
        raise ValueError("not a checkpoint body: the size line is not a decimal number")
    size = int(size_text)
    if size >= 1 << 64:
        raise ValueError("not a checkpoint body: the size line is not a decimal number")
    root = _b64decode(root_text)
    if root is None or len(root) != 32:
        raise ValueError("not a checkpoint body: the root line is not base64 of 32 bytes")
    if cp_origin != origin:
        raise ValueError(f"checkpoint origin is {cp_origin!r} but this ledger's is {origin!r}")
    return Checkpoint(cp_origin, size, root)


# --- Merkle tree (RFC 9162) ------------------------------------------------------


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> Optional[str]:
    """None when the audit path leads from ``leaf`` to ``root``, else why not."""
    if index >= size:
        return f"index {index} is not below the tree size {size}"
    fnode, snode, r = index, size - 1, leaf
    for p in path:
        if snode == 0:
            return "the proof has the wrong length"
        if fnode & 1 or fnode == snode:
            r = _node_hash(p, r)
            while fnode & 1 == 0 and fnode != 0:
                fnode >>= 1
                snode >>= 1
        else:
            r = _node_hash(r, p)
        fnode >>= 1
        snode >>= 1
    if snode != 0:
        return "the proof has the wrong length"
    if r != root:
        return "the proof leads to another root"
    return None


# --- Ledger entries --------------------------------------------------------------

_ENTRY_FIELDS = ("actor", "body", "index", "kind", "prev", "time")


def parse_entry_line(line: str | bytes) -> LedgerEntry:
    """Parses one ledger line, insisting it is exactly the canonical
    encoding of the entry it holds (as the ledger hashes it)."""
    data = line.encode("utf-8") if isinstance(line, str) else bytes(line)
    try:
        value = loads(data)
    except JsonError as e:
        raise ValueError(f"not valid JSON ({e}); each line must be one JSON object") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    for key in value:
        if key not in _ENTRY_FIELDS:
            raise ValueError(f"key `{key}` is not part of the entry format")
    for key in _ENTRY_FIELDS:
        if key not in value:
            raise ValueError(f"key `{key}` is missing")
    index = value["index"]
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError("key `index` must be a non-negative integer")
    for key in ("prev", "time", "kind", "actor"):
        if not isinstance(value[key], str):
            raise ValueError(f"key `{key}` must be a string")
    if not _is_hex(value["prev"], 64):
        raise ValueError("`prev` must be 64 lowercase hex characters")
    if canonical_bytes(value) != data:
        raise ValueError("bytes differ from the canonical encoding (compact JSON, sorted keys); the line was edited")
    return LedgerEntry(index, value["prev"], value["time"], value["kind"], value["actor"], value["body"])


# --- Tables ----------------------------------------------------------------------

_TABLE_MAGIC = b"UTB1"
_TAG_TEXT, _TAG_INT, _TAG_FLOAT, _TAG_ESTIMATE = 0, 1, 2, 3


def _u32(n: int) -> bytes:
    return struct.pack("<I", n & 0xFFFFFFFF)


def _str(s: str) -> bytes:
    raw = s.encode("utf-8")
    return _u32(len(raw)) + raw


def _as_f64(x: Any) -> Optional[float]:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def encode_table(table: Any) -> bytes:
    """The binary encoding (ABI ``UTB1``) of a release document's ``table``,
    whose SHA-256 is the document's ``output_sha256``. A column's kind is
    read from its first value as the service reads it: text, an estimate
    object (value, lower, upper), a whole number that fits 64 signed bits,
    or else a float."""

    def bad() -> ValueError:
        return ValueError("the release's `table` is malformed")

    columns = table.get("columns") if isinstance(table, dict) else None
    if not isinstance(columns, list):
        raise bad()
    body = b""
    rows = None
    for c in columns:
        name = c.get("name") if isinstance(c, dict) else None
        values = c.get("values") if isinstance(c, dict) else None
        if not isinstance(name, str) or not isinstance(values, list):
            raise bad()
        if rows is None:
            rows = len(values)
        first = values[0] if values else ""
        out = [_str(name)]
        if isinstance(first, str):
            out.append(bytes([_TAG_TEXT]))
            for v in values:
                if not isinstance(v, str):
                    raise bad()
                out.append(_str(v))
        elif isinstance(first, dict):
            out.append(bytes([_TAG_ESTIMATE]))
            for v in values:
                if not isinstance(v, dict):
                    raise bad()
                for k in ("value", "lower", "upper"):
                    f = _as_f64(v.get(k))
                    if f is None:
                        raise bad()
                    out.append(struct.pack("<d", f))
        elif isinstance(first, int) and not isinstance(first, bool) and -(1 << 63) <= first < (1 << 63):
            out.append(bytes([_TAG_INT]))
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or not -(1 << 63) <= v < (1 << 63):
                    raise bad()
                out.append(struct.pack("<q", v))
        else:
            out.append(bytes([_TAG_FLOAT]))
            for v in values:
                f = _as_f64(v)
                if f is None:
                    raise bad()
                out.append(struct.pack("<d", f))
        body += b"".join(out)
    return _TABLE_MAGIC + _u32(len(columns)) + _u32(rows or 0) + body


# --- The bundle ------------------------------------------------------------------


def _exact_object(value: Any, fields: Sequence[str], what: str) -> Dict[str, Any]:
    """A JSON object with exactly ``fields`` (the service refuses unknown,
    missing and repeated ones)."""
    if not isinstance(value, dict):
        raise _broken("the bundle's format", f"{what} is not an object")
    dupes = getattr(value, "duplicate_keys", ())
    if dupes:
        raise _broken("the bundle's format", f"duplicate field `{dupes[0]}` in {what}")
    for key in value:
        if key not in fields:
            raise _broken("the bundle's format", f"unknown field `{key}` in {what}")
    for key in fields:
        if key not in value:
            raise _broken("the bundle's format", f"missing field `{key}` in {what}")
    return value


def _u64(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << 64):
        raise _broken("the bundle's format", f"{what} is not a non-negative integer")
    return value


def _hash(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not _is_hex(value, 64):
        raise _broken("the bundle's format", f"{what} is not 64 lowercase hex characters")
    return bytes.fromhex(value)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _broken("the bundle's format", f"{what} is not a string")
    return value


def _read_bundle(text: str | bytes | os.PathLike[str]) -> bytes:
    if isinstance(text, os.PathLike):
        return Path(text).read_bytes()
    if isinstance(text, str):
        return text.encode("utf-8")
    return bytes(text)


def verify_bundle(bundle: str | bytes | os.PathLike[str], public_key: PublicKeyLike) -> ReleaseProof:
    """Proves a release bundle with only the ledger's public key.

    ``bundle`` is the bundle's text or bytes (as downloaded), or a path to
    the file. Raises :class:`VerificationError` naming the first link that
    breaks; returns what the bundle proves."""
    key = load_public_key(public_key)
    raw = _read_bundle(bundle)
    try:
        parsed = loads(raw)
    except JsonError as e:
        raise _broken("the bundle's format", str(e)) from None
    top = _exact_object(parsed, ("format", "document", "signature", "ledger"), "the bundle")
    fmt = _text(top["format"], "`format`")
    signature_b64 = _text(top["signature"], "`signature`")
    evidence = _exact_object(top["ledger"], ("public_key", "verifier_key", "checkpoint", "entries"), "`ledger`")
    bundle_key = _text(evidence["public_key"], "`ledger.public_key`")
    bundle_verifier = _text(evidence["verifier_key"], "`ledger.verifier_key`")
    note = _text(evidence["checkpoint"], "`ledger.checkpoint`")
    if not isinstance(evidence["entries"], list):
        raise _broken("the bundle's format", "`ledger.entries` is not a list")
    proven: List[Tuple[str, int, int, bytes, bytes, List[bytes]]] = []
    for n, item in enumerate(evidence["entries"]):
        item = _exact_object(item, ("line", "proof"), f"entry {n}")
        line = _text(item["line"], f"the line of entry {n}")
        proof = _exact_object(item["proof"], ("index", "size", "leaf_hash", "root", "path"), f"the proof of entry {n}")
        path = proof["path"]
        if not isinstance(path, list):
            raise _broken("the bundle's format", f"the path of entry {n} is not a list")
        proven.append(
            (
                line,
                _u64(proof["index"], "a proof's index"),
                _u64(proof["size"], "a proof's size"),
                _hash(proof["leaf_hash"], "a proof's leaf hash"),
                _hash(proof["root"], "a proof's root"),
                [_hash(h, "a proof's path") for h in path],
            )
        )
    if fmt != BUNDLE_FORMAT:
        raise _broken("the bundle's format", f"`{fmt}` is not {BUNDLE_FORMAT}")

    key_hex = _raw(key).hex()
    if bundle_key != key_hex:
        raise _broken(
            "the key identity",
            f"the bundle names ledger key {bundle_key}, but the key given is {key_hex}",
        )
    expected_verifier = verifier_key(ORIGIN, key)
    if bundle_verifier != expected_verifier:
        raise _broken(
            "the key identity",
            f"the bundle's verifier key {bundle_verifier} is not {expected_verifier}",
        )
    try:
        cp = open_checkpoint(note, key)
    except ValueError as e:
        raise _broken("the signed checkpoint", str(e)) from None

    document = top["document"]
    try:
        canonical = canonical_bytes(document)
    except JsonError as e:
        raise _broken("the release document", str(e)) from None
    signature = _b64decode(signature_b64)
    if signature is None:
        raise _broken("the release signature", "it is not valid base64")
    if not _verify(key, _RELEASE_CONTEXT + canonical, signature):
        raise _broken(
            "the release signature",
            "it does not verify with the ledger's public key: the document was altered or signed by another key",
        )

    def field(k: str) -> Any:
        return document.get(k) if isinstance(document, dict) else None

    try:
        content_sha = hashlib.sha256(encode_table(field("table"))).hexdigest()
    except ValueError as e:
        raise _broken("the output bytes", str(e)) from None
    if not same_value(content_sha, field("output_sha256")):
        raise _broken("the output bytes", "the table does not hash to the document's `output_sha256`")

    entries: List[LedgerEntry] = []
    for n, (line, index, size, leaf, root, path) in enumerate(proven):
        link = f"ledger entry {n} of the bundle"
        try:
            entry = parse_entry_line(line)
        except ValueError as e:
            raise _broken(link, str(e)) from None
        if index != entry.index:
            raise _broken(link, f"its proof is for index {index}, the entry is {entry.index}")
        if _leaf_hash(line.encode("utf-8")) != leaf:
            raise _broken(
                link,
                f"entry {entry.index} does not hash to the leaf its proof is for: the entry was altered",
            )
        if size != cp.size or root != cp.root:
            raise _broken(
                link,
                f"the proof of entry {entry.index} leads to a tree of {size} entries, "
                f"not to the signed checkpoint of {cp.size}",
            )
        why = _verify_inclusion(index, size, leaf, path, root)
        if why is not None:
            raise _broken(link, f"entry {entry.index} is not included under the signed checkpoint: {why}")
        entries.append(entry)

    release_value = field("release")
    release_id = release_value if isinstance(release_value, str) else ""
    signed = next(
        (
            e
            for e in entries
            if e.kind == "release.signed" and isinstance(e.body, dict) and same_value(e.body.get("release"), release_id)
        ),
        None,
    )
    if signed is None:
        raise _broken("the release entry", f"the bundle has no `release.signed` entry for `{release_id}`")
    missing = object()
    body: Dict[str, Any] = signed.body
    for k, what in (
        ("output", "output"),
        ("output_sha256", "output bytes"),
        ("module_sha256", "module hash"),
        ("sql", "query"),
        ("input_snapshot", "inputs"),
        ("policy_version", "policy"),
        ("epsilon_spent", "spend"),
        ("reviewer", "reviewer"),
    ):
        recorded = body.get(k, missing)
        stated = document.get(k, missing) if isinstance(document, dict) else missing
        same = (recorded is missing and stated is missing) or (
            recorded is not missing and stated is not missing and same_value(recorded, stated)
        )
        if not same:
            raise _broken(
                f"the {what}",
                f"ledger entry {signed.index} records `{k}` = "
                f"{'null' if recorded is missing else canonical_bytes(recorded).decode()}, the release says "
                f"{'null' if stated is missing else canonical_bytes(stated).decode()}",
            )
    reviewer_value = field("reviewer")
    reviewer = reviewer_value if isinstance(reviewer_value, str) else ""
    if signed.actor != reviewer:
        raise _broken(
            "the reviewers",
            f"ledger entry {signed.index} was written by `{signed.actor}`, not the release's reviewer",
        )
    if not same_value(body.get("document_sha256"), hashlib.sha256(canonical).hexdigest()):
        raise _broken("the release entry", f"ledger entry {signed.index} records another document hash")

    output = field("output")
    named = field("approvers")
    approvers = [a for a in named if isinstance(a, str)] if isinstance(named, list) else []
    recorded_approvals = [
        e
        for e in entries
        if e.kind == "review.approved" and isinstance(e.body, dict) and "output" in e.body and same_value(e.body["output"], output)
    ]
    for approver in approvers:
        if not any(e.actor == approver for e in recorded_approvals):
            raise _broken(
                "the reviewers",
                f"no `review.approved` entry by `{approver}` for output {canonical_bytes(output).decode()}",
            )
    if not approvers or len(recorded_approvals) != len(approvers):
        raise _broken(
            "the reviewers",
            f"the release names {len(approvers)} approvers, the ledger entries record {len(recorded_approvals)}",
        )
    module = field("module_sha256")
    epsilon = _as_f64(field("epsilon_spent"))
    return ReleaseProof(
        release=release_id,
        ledger_index=signed.index,
        tree_size=cp.size,
        root=cp.root.hex(),
        output_sha256=content_sha,
        module_sha256=module if isinstance(module, str) else "",
        epsilon_spent=epsilon if epsilon is not None else 0.0,
        reviewer=reviewer,
        approvers=tuple(approvers),
    )
