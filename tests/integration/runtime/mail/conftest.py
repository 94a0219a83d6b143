"""Mailpit (a real SMTP server with an HTTP API, the one developers run) with STARTTLS and authentication,
and a runtime that sends its account mail through it.

The binary comes from `hack/tools.sh mailpit` (built once into a cache), or from $GPT_MAILPIT.
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ....tools import tool_binary
from ..conftest import (
    RuntimeServer,
    free_port,
    start_runtime,
    stop_process,
    stop_runtime,
    wait_until_ready,
)

REPO = Path(__file__).resolve().parents[4]
SMTP_USER = "runtime"
SMTP_PASSWORD = "mail-Pa55word"


def mailpit_binary() -> str:
    return tool_binary("mailpit", "GPT_MAILPIT")


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (the runtime trusts it via SSL_CERT_FILE)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class Mailpit:
    smtp_port: int
    api: str
    cert: Path
    process: subprocess.Popen

    def smtp_url(self, *, scheme: str = "smtp", password: str = SMTP_PASSWORD) -> str:
        query = "?starttls=true" if scheme == "smtp" else ""
        return f"{scheme}://{SMTP_USER}:{password}@localhost:{self.smtp_port}{query}"

    def messages_to(self, address: str) -> list[dict]:
        """Summaries of the mails to `address`, newest first."""
        response = httpx.get(f"{self.api}/api/v1/search", params={"query": f"to:{address}"}, timeout=10)
        response.raise_for_status()
        return [m for m in response.json()["messages"] if any(t["Address"] == address for t in m["To"])]

    def wait_for(self, address: str, subject_has: str, *, count: int = 1, timeout_s: float = 15) -> list[dict]:
        """The full mails to `address` with `subject_has` in the subject, once `count` are there, oldest first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [m for m in self.messages_to(address) if subject_has in m["Subject"]]
            if len(found) >= count:
                return [self.message(m["ID"]) for m in reversed(found)]
            time.sleep(0.1)
        raise AssertionError(f"no {count} mail(s) {subject_has!r} to {address} reached Mailpit")

    def message(self, message_id: str) -> dict:
        response = httpx.get(f"{self.api}/api/v1/message/{message_id}", timeout=10)
        response.raise_for_status()
        return response.json()


def start_mailpit(directory: Path, *, implicit_tls: bool = False) -> Mailpit:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed(directory)
    (directory / "smtp-users").write_text(f"{SMTP_USER}:{SMTP_PASSWORD}\n")
    smtp_port, http_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            mailpit_binary(),
            "--smtp",
            f"127.0.0.1:{smtp_port}",
            "--listen",
            f"127.0.0.1:{http_port}",
            "--database",
            str(directory / "mailpit.db"),
            "--smtp-tls-cert",
            str(cert),
            "--smtp-tls-key",
            str(key),
            "--smtp-require-tls" if implicit_tls else "--smtp-require-starttls",
            "--smtp-auth-file",
            str(directory / "smtp-users"),
            "--disable-version-check",
        ],
        stdout=(directory / "mailpit.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{http_port}"
    wait_until_ready(process, f"{api}/readyz", directory / "mailpit.log", "mailpit", timeout=30, interval=0.1)
    return Mailpit(smtp_port, api, cert, process)


def stop(process: subprocess.Popen) -> None:
    stop_process(process, timeout=10)


@pytest.fixture(scope="module")
def mailpit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailpit]:
    server = start_mailpit(tmp_path_factory.mktemp("mailpit"))
    yield server
    stop(server.process)


@pytest.fixture(scope="module")
def mailed(mailpit: Mailpit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    """A runtime sending over SMTP with STARTTLS and auth to Mailpit, trusting Mailpit's certificate."""
    runtime = start_runtime(
        tmp_path_factory.mktemp("mailed"),
        GPT_SMTP_URL=mailpit.smtp_url(),
        GPT_MAIL_FROM="GPT <no-reply@gpt.example.com>",
        GPT_PUBLIC_URL="https://chat.example.com",
        GPT_ADMIN_EMAILS="chief@example.com",
        GPT_RATE_LIMIT_ANONYMOUS="0",
        GPT_MAIL_PER_ADDRESS_PER_HOUR="3",
        SSL_CERT_FILE=str(mailpit.cert),
    )
    yield runtime
    stop_runtime(runtime)
