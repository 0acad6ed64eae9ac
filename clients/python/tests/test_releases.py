"""Approved releases as DataFrames and Arrow tables, verified offline."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import Service

from unseen_client import Client, Release, ReleaseProof, VerificationError, verify_bundle


def test_a_release_becomes_a_dataframe_with_bounds(query_release: Release, service: Service) -> None:
    assert query_release.grant == service.grant
    assert query_release.sql is not None and query_release.sql.startswith("SELECT district")
    assert query_release.approvers == ("rev",) and query_release.reviewer == "rev"
    assert query_release.epsilon_spent == 1.0
    frame = query_release.to_pandas()
    assert list(frame.columns) == [
        "district",
        "residents", "residents_lower", "residents_upper",
        "mean_income", "mean_income_lower", "mean_income_upper",
    ]
    assert len(frame) == 12 and frame["district"].is_unique
    for col in ("residents", "mean_income"):
        assert str(frame[col].dtype) == "float64"
        assert ((frame[f"{col}_lower"] <= frame[col]) & (frame[col] <= frame[f"{col}_upper"])).all()
    # The values are the released ones, row for row.
    released = {c["name"]: c["values"] for c in query_release.document["table"]["columns"]}
    assert frame["residents_upper"].tolist() == [v["upper"] for v in released["residents"]]
    assert frame.attrs["unseen_release"] == query_release.id


def test_a_release_becomes_an_arrow_table(query_release: Release) -> None:
    table = query_release.to_arrow()
    assert isinstance(table, pa.Table)
    assert table.column_names == list(query_release.to_pandas().columns)
    assert table.schema.field("district").type == pa.string()
    field = table.schema.field("mean_income_lower")
    assert field.type == pa.float64()
    assert field.metadata == {b"unseen.estimate": b"mean_income", b"unseen.part": b"lower"}
    assert table.schema.metadata[b"unseen.release"] == query_release.id.encode()
    assert table.num_rows == 12
    assert table.to_pandas().equals(query_release.to_pandas())


def test_a_bundle_verifies_offline_with_the_public_key(query_release: Release, service: Service, dev: Client) -> None:
    # The key as the data provider publishes it, and as the service says.
    proof = query_release.verify(service.ledger_pub)
    assert isinstance(proof, ReleaseProof)
    assert proof.release == query_release.id
    assert proof.output_sha256 == query_release.output_sha256
    assert proof.approvers == ("rev",) and proof.reviewer == "rev"
    assert proof.tree_size > proof.ledger_index
    assert verify_bundle(query_release.data, dev.public_key()) == proof


def test_a_saved_bundle_is_what_the_command_line_verifies(query_release: Release, service: Service, tmp_path: Path) -> None:
    path = query_release.save(tmp_path / "release.json")
    with pytest.raises(FileExistsError):
        query_release.save(path)
    assert Release.load(path).verify(str(service.ledger_pub)) == query_release.verify(service.ledger_pub)
    done = service.cli("release", "verify", str(path), "--public-key", str(service.ledger_pub), "--json")
    theirs = json.loads(done.stdout)
    ours = verify_bundle(path, service.ledger_pub)
    assert theirs["release"] == ours.release and theirs["ledger_index"] == ours.ledger_index
    assert theirs["root"] == ours.root and theirs["tree_size"] == ours.tree_size
    assert theirs["output_sha256"] == ours.output_sha256


def _tampered(release: Release, old: bytes, new: bytes) -> bytes:
    assert release.data.count(old) >= 1, old
    return release.data.replace(old, new, 1)


def _flip_value(release: Release) -> bytes:
    """The bundle with the first released count changed by one."""
    estimate = release.document["table"]["columns"][1]["values"][0]
    value = estimate["value"]
    bumped = json.dumps(value + 1.0)
    return _tampered(release, f'"value": {json.dumps(value)}'.encode(), f'"value": {bumped}'.encode())


def test_a_changed_value_breaks_the_release_signature(query_release: Release, service: Service, tmp_path: Path) -> None:
    bad = _flip_value(query_release)
    with pytest.raises(VerificationError) as caught:
        verify_bundle(bad, service.ledger_pub)
    assert caught.value.link == "the release signature"
    # The command line agrees.
    path = tmp_path / "bad.json"
    path.write_bytes(bad)
    done = service.cli("release", "verify", str(path), "--public-key", str(service.ledger_pub), check=False)
    assert done.returncode != 0 and "the release signature" in done.stderr


def test_one_flipped_byte_anywhere_that_matters_is_caught(query_release: Release, service: Service) -> None:
    line = query_release.bundle["ledger"]["entries"][0]["line"]
    cases = {
        # A ledger entry: its canonical line no longer hashes to its leaf.
        "ledger entry 0 of the bundle": _tampered(query_release, b'\\"actor\\":\\"rev\\"', b'\\"actor\\":\\"reu\\"'),
        # The signed checkpoint's tree size.
        "the signed checkpoint": _tampered(query_release, b"unseen.local/ledger\\n", b"unseen.local/ledger\\n1"),
        # The signature itself.
        "the release signature": _tampered(
            query_release,
            query_release.bundle["signature"].encode(),
            ("A" if query_release.bundle["signature"][0] != "A" else "B").encode()
            + query_release.bundle["signature"][1:].encode(),
        ),
    }
    assert '"actor":"rev"' in line
    for link, data in cases.items():
        with pytest.raises(VerificationError) as caught:
            verify_bundle(data, service.ledger_pub)
        assert caught.value.link == link, (link, caught.value)


def test_another_key_is_not_the_ledger_key(query_release: Release) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stranger = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(VerificationError) as caught:
        query_release.verify(stranger)
    assert caught.value.link == "the key identity"


def test_an_open_release_keeps_whole_numbers(dev: Client, rev: Client, service: Service) -> None:
    outcome = dev.query(service.grant, "SELECT gender, COUNT(*) AS n FROM residents GROUP BY gender ORDER BY gender")
    release = dev.download_release(rev.approve(outcome.output or "", "open columns only").release or "")
    frame = release.to_pandas()
    assert list(frame.columns) == ["gender", "n"]
    assert str(frame["n"].dtype) == "int64" and frame["n"].sum() == 3000
    assert frame["gender"].tolist() == ["F", "M"]
    assert release.to_arrow().schema.field("n").type == pa.int64()
    assert release.verify(service.ledger_pub).epsilon_spent == 0.0


def test_every_download_is_counted(dev: Client, service: Service, query_release: Release) -> None:
    before = dev.usage(service.grant).downloads
    again = dev.download_release(query_release.id)
    assert again.id == query_release.id
    assert dev.usage(service.grant).downloads == before + 1
