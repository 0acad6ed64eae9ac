"""A real `unseen serve` on the loopback for the whole test session.

The data directory is set up through the command line as its operator
would: an admin, a developer, two reviewers and an auditor (their tokens
captured from `user add --json`), generated datasets registered, grants
issued. Then `unseen serve` listens on a free port of 127.0.0.1 until the
session ends.

`UNSEEN_BIN` names the `unseen` binary (required). `UNSEEN_GUESTS_DIR`
names the directory of the prebuilt guest modules (`district_income.wasm`,
`sme_credit_risk.wasm`, `udf_sme_score.wasm`, ...), as
`cargo build --manifest-path guests/Cargo.toml --target wasm32-unknown-unknown --release`
leaves them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List

import httpx
import pytest

from unseen_client import Client, Release

# Variables of the caller's shell that would point the command line
# elsewhere than the directory and server made here.
_FOREIGN_ENV = ("UNSEEN_SERVER", "UNSEEN_TOKEN", "UNSEEN_DATA_DIR", "UNSEEN_CONFIG", "UNSEEN_LISTEN", "UNSEEN_CA_CERT")


def _binary() -> Path:
    raw = os.environ.get("UNSEEN_BIN")
    if not raw:
        pytest.fail(
            "UNSEEN_BIN is not set: point it at the `unseen` binary "
            "(for example target/debug/unseen after `cargo build`), or run scripts/test-python",
            pytrace=False,
        )
    path = Path(raw)
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"UNSEEN_BIN={raw} is not an executable file", pytrace=False)
    return path.resolve()


def _guests_dir() -> Path:
    raw = os.environ.get("UNSEEN_GUESTS_DIR")
    if not raw:
        pytest.fail(
            "UNSEEN_GUESTS_DIR is not set: point it at the built guest modules "
            "(cargo build --manifest-path guests/Cargo.toml --target wasm32-unknown-unknown --release "
            "puts them in TARGET_DIR/wasm32-unknown-unknown/release), or run scripts/test-python",
            pytrace=False,
        )
    path = Path(raw)
    missing = [n for n in ("district_income.wasm", "sme_credit_risk.wasm", "udf_sme_score.wasm") if not (path / n).is_file()]
    if missing:
        pytest.fail(f"UNSEEN_GUESTS_DIR={raw} lacks {', '.join(missing)}", pytrace=False)
    return path.resolve()


def _env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env.setdefault("UNSEEN_LOG", "warn")
    return env


@dataclass
class Service:
    """The running service and what was set up in it."""

    url: str
    binary: Path
    data_dir: Path
    work_dir: Path
    guests: Path
    tokens: Dict[str, str] = field(repr=False)
    #: Grants to `dev`: over `residents` (queries, jobs); one kept for the
    #: README example; over `enterprises` joined to `tax_records` and
    #: `utility_usage`, with UDFs allowed.
    grant: str
    readme_grant: str
    sme_grant: str
    clients: List[Client] = field(default_factory=list, repr=False)

    def client(self, user: str = "dev") -> Client:
        c = Client(self.url, self.tokens[user])
        self.clients.append(c)
        return c

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run_cli(self.binary, list(args), check=check)

    @property
    def ledger_pub(self) -> Path:
        """The public key file as the data provider publishes it."""
        return self.data_dir / "ledger" / "ledger.pub"

    def guest(self, name: str) -> Path:
        return self.guests / f"{name}.wasm"


def run_cli(binary: Path, args: List[str], *, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, env=_env(), timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(
            f"`unseen {' '.join(args)}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _set_up(binary: Path, work: Path, data: Path) -> Dict[str, str]:
    """Users, datasets and grants, through the command line as the host's
    operator. Returns the users' tokens and the grant ids."""

    def cli(*args: str) -> str:
        return run_cli(binary, list(args)).stdout

    def as_admin(*args: str) -> dict:
        return json.loads(cli(*args, "--as", "admin", "--json", "--data-dir", str(data)))

    out: Dict[str, str] = {}
    out["admin"] = json.loads(
        cli("user", "add", "--id", "admin", "--name", "王敏", "--role", "admin", "--json", "--data-dir", str(data))
    )["token"]
    for user, name, role in (
        ("dev", "李强", "developer"),
        ("rev", "张华", "reviewer"),
        ("rev2", "赵丽", "reviewer"),
        ("aud", "陈静", "auditor"),
    ):
        out[user] = as_admin("user", "add", "--id", user, "--name", name, "--role", role)["token"]

    datasets = (
        # name, rows, seed, related rows
        ("residents", "3000", "42", None),
        ("enterprises", "400", "52", None),
        ("tax_records", "1600", "53", "400"),
        ("utility_usage", "4000", "54", "400"),
    )
    for name, rows, seed, related in datasets:
        parquet = work / f"{name}.parquet"
        manifest = work / f"{name}.toml"
        args = ["dataset", "generate", name, "--rows", rows, "--seed", seed, "--out", str(parquet)]
        if related:
            args += ["--related-rows", related]
        cli(*args)
        manifest.write_text(cli("dataset", "manifest", name), encoding="utf-8")
        as_admin("dataset", "register", "--name", name, "--parquet", str(parquet), "--manifest", str(manifest))

    def grant(*args: str) -> str:
        return as_admin("grant", "issue", "--developer", "dev", *args)["grant"]

    out["grant"] = grant(
        "--dataset", "residents", "--purpose", "housing plan", "--epsilon", "100", "--query-epsilon", "1"
    )
    out["readme_grant"] = grant(
        "--dataset", "residents", "--purpose", "district income", "--epsilon", "20", "--query-epsilon", "1"
    )
    out["sme_grant"] = grant(
        "--dataset", "enterprises", "--join", "tax_records", "--join", "utility_usage",
        "--allow-udfs", "--purpose", "SME credit risk", "--epsilon", "10", "--query-epsilon", "1",
    )
    return out


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"`unseen serve` exited {process.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            if httpx.get(f"{url}/v1/ready", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"`unseen serve` was not ready within {timeout:g} s:\n{log.read_text(errors='replace')[-4000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    binary = _binary()
    guests = _guests_dir()
    work = tmp_path_factory.mktemp("unseen")
    os.chmod(work, 0o700)
    data = work / "data"
    ids = _set_up(binary, work, data)
    log = work / "serve.log"
    process = None
    url = ""
    # A port found free can be taken before the server binds it: try again.
    for attempt in range(3):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with open(log, "ab") as sink:
            process = subprocess.Popen(
                [
                    str(binary), "serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
                    "--max-jobs", "2", "--grace-period", "5", "--timing-quantum-ms", "50",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=_env(),
            )
        try:
            _wait_ready(url, process, log)
            break
        except RuntimeError:
            _stop(process)
            if attempt == 2:
                raise
    assert process is not None
    svc = Service(
        url=url,
        binary=binary,
        data_dir=data,
        work_dir=work,
        guests=guests,
        tokens={k: ids[k] for k in ("admin", "dev", "rev", "rev2", "aud")},
        grant=ids["grant"],
        readme_grant=ids["readme_grant"],
        sme_grant=ids["sme_grant"],
    )
    try:
        yield svc
    finally:
        for c in svc.clients:
            c.close()
        _stop(process)
        if process.returncode not in (0, None):
            print(f"`unseen serve` exited {process.returncode}; its log:\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture
def dev(service: Service) -> Client:
    return service.client("dev")


@pytest.fixture
def rev(service: Service) -> Client:
    return service.client("rev")


#: A DP query over the residents: a count and a mean income per district.
DISTRICT_SQL = (
    "SELECT district, COUNT(*) AS residents, AVG(annual_income) AS mean_income "
    "FROM residents GROUP BY district"
)


@pytest.fixture(scope="session")
def query_release(service: Service) -> Release:
    """A query's output, approved by a reviewer and downloaded by its
    developer."""
    dev = service.client("dev")
    rev = service.client("rev")
    outcome = dev.query(service.grant, DISTRICT_SQL)
    assert outcome.status == "finished" and outcome.output
    decision = rev.approve(outcome.output, "DP aggregates over public districts")
    assert decision.status == "approved" and decision.release
    return dev.download_release(decision.release)
