"""The README's example runs as written, against the test service."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import Service

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


def test_the_readme_example_runs(service: Service, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 4, "the README's example is its ```python blocks"
    # What a notebook would be configured with.
    monkeypatch.setenv("UNSEEN_SERVER", service.url)
    monkeypatch.setenv("UNSEEN_TOKEN", service.tokens["dev"])
    monkeypatch.setenv("UNSEEN_REVIEWER_TOKEN", service.tokens["rev"])
    monkeypatch.setenv("UNSEEN_GRANT", service.readme_grant)
    monkeypatch.setenv("UNSEEN_GUESTS_DIR", str(service.guests))
    monkeypatch.setenv("UNSEEN_LEDGER_PUB", str(service.ledger_pub))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for n, block in enumerate(blocks, 1):
        code = compile(block, f"README.md python block {n}", "exec")
        exec(code, namespace)
    # The example ends with a verified release in a DataFrame.
    frame = namespace["frame"]
    assert {"mean_income", "mean_income_lower", "mean_income_upper"} <= set(frame.columns)
    assert namespace["proof"].release == namespace["release"].id
