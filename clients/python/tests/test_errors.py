"""Errors become exceptions; the token never appears in them."""

from __future__ import annotations

import traceback

import pytest
from conftest import Service

from unseen_client import (
    BadRequest,
    Client,
    Forbidden,
    NotFound,
    TransportError,
    Unauthorized,
    UnseenError,
)


def test_a_wrong_token_is_unauthorized_and_never_shown(service: Service) -> None:
    secret = "unseen_" + "S3cr3tTokenThatMustNotLeak" * 2
    client = Client(service.url, secret)
    service.clients.append(client)
    assert secret not in repr(client)
    with pytest.raises(Unauthorized) as caught:
        client.grants()
    error = caught.value
    assert error.status == 401 and isinstance(error, UnseenError)
    shown = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    for text in (str(error), repr(error), shown, str(error.args)):
        assert secret not in text
        assert "S3cr3t" not in text


def test_a_real_token_never_appears_in_errors(service: Service) -> None:
    token = service.tokens["dev"]
    client = service.client("dev")
    with pytest.raises(NotFound) as caught:
        client.grant("grant-does-not-exist")
    shown = "".join(traceback.format_exception(type(caught.value), caught.value, caught.value.__traceback__))
    assert token not in shown and token not in repr(client)
    assert "does not exist" in str(caught.value)


def test_roles_are_enforced(service: Service) -> None:
    with pytest.raises(Forbidden) as caught:
        service.client("dev").review_queue()
    assert caught.value.status == 403
    with pytest.raises(Forbidden):
        service.client("rev").query(service.grant, "SELECT 1")


def test_a_bad_argument_is_a_bad_request(service: Service) -> None:
    with pytest.raises(BadRequest):
        service.client("dev").upload_module(b"")


def test_an_unreachable_service_is_a_transport_error(service: Service) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}", service.tokens["dev"], timeout=2.0)
    with pytest.raises(TransportError) as caught:
        client.me()
    assert service.tokens["dev"] not in str(caught.value)
    client.close()


def test_an_auditor_verifies_the_ledger(service: Service) -> None:
    verified = service.client("aud").verify_ledger()
    assert verified.ok and verified.entries > 0 and len(verified.root) == 64
    note = service.client("aud").checkpoint()
    assert note.startswith("unseen.local/ledger\n")
