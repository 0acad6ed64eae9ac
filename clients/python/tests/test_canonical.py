"""The JSON the service signs and hashes is reproduced byte for byte."""

from __future__ import annotations

import struct

import pytest
from conftest import Service

from unseen_client.canonical import canonical_bytes, format_float, loads, same_value
from unseen_client.verify import parse_entry_line


@pytest.mark.parametrize(
    "value, text",
    [
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (1.0, "1.0"),
        (0.1, "0.1"),
        (100.0, "100.0"),
        (1e15, "1000000000000000.0"),
        (1e16, "1e+16"),
        (123456789012345678.0, "1.2345678901234568e+17"),
        (1e-5, "0.00001"),
        (1.5e-5, "0.000015"),
        (1e-6, "1e-6"),
        (-2.5e-7, "-2.5e-7"),
        (5.444310685350916e14, "544431068535091.6"),
        (6.62607015e-34, "6.62607015e-34"),
        (2.9802322387695312e-08, "2.9802322387695312e-8"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
    ],
)
def test_floats_are_written_as_the_service_writes_them(value: float, text: str) -> None:
    assert format_float(value) == text
    assert struct.pack("<d", float(text)) == struct.pack("<d", value)


def test_numbers_keep_their_kind() -> None:
    parsed = loads('{"b":1,"a":1.0,"c":-0,"d":18446744073709551616,"e":"\\u001f\\"\\u00e9"}')
    assert canonical_bytes(parsed) == '{"a":1.0,"b":1,"c":-0.0,"d":1.8446744073709552e+19,"e":"\\u001f\\"é"}'.encode()
    assert not same_value(1, 1.0) and not same_value(True, 1) and same_value([1, {"x": 2.5}], [1, {"x": 2.5}])


def test_every_ledger_line_reencodes_to_itself(service: Service, query_release: object) -> None:
    # The service's own ledger: thousands of numbers, strings and keys
    # written by the service, each line its canonical form.
    lines = (service.data_dir / "ledger" / "entries.jsonl").read_bytes().splitlines()
    assert len(lines) > 20
    for n, line in enumerate(lines):
        entry = parse_entry_line(line)
        assert entry.index == n
