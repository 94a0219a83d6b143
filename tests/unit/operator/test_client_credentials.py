"""The operator's TLS setup from kubeconfig credentials, inline data included (kind writes it that way)."""

from __future__ import annotations

import base64
import datetime
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gpt_operator.apply import Credentials, _ssl_context

pytestmark = pytest.mark.unit


def _key_and_cert(name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def test_inline_client_certificates_are_loaded_base64_or_pem():
    key, cert = _key_and_cert("operator")
    for cert_data, key_data in ((base64.b64encode(cert), base64.b64encode(key)), (cert, key)):
        creds = Credentials(
            server="https://127.0.0.1:6443",
            ca_data=base64.b64encode(cert),
            certificate_data=cert_data,
            private_key_data=key_data,
        )
        assert isinstance(_ssl_context(creds), ssl.SSLContext)


def test_a_key_that_does_not_match_its_certificate_is_refused():
    _, cert = _key_and_cert("operator")
    other_key, _ = _key_and_cert("someone-else")
    creds = Credentials(
        server="https://127.0.0.1:6443", ca_data=cert, certificate_data=cert, private_key_data=other_key
    )
    with pytest.raises(ssl.SSLError):
        _ssl_context(creds)


def test_plain_http_and_insecure_servers_skip_tls_setup():
    assert _ssl_context(Credentials(server="http://127.0.0.1:8001")) is False
    assert _ssl_context(Credentials(server="https://127.0.0.1:6443", insecure=True)) is False


@pytest.mark.parametrize(
    ("environ", "server"),
    [
        ({"KUBERNETES_SERVICE_HOST": "198.19.0.1", "KUBERNETES_SERVICE_PORT": "443"}, "https://198.19.0.1:443"),
        ({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}, "https://[fd00::1]:6443"),
        ({"KUBERNETES_SERVICE_HOST": "198.19.0.1"}, None),
        ({}, None),
    ],
)
def test_in_cluster_server_comes_from_the_service_env_not_dns(environ: dict[str, str], server: str | None) -> None:
    """In a pod, the API server is reached at KUBERNETES_SERVICE_HOST:PORT as client-go does: a cluster without
    DNS (or with DNS down) must not stop the operator (kopf's default is https://kubernetes.default.svc)."""
    from gpt_operator.main import in_cluster_server

    assert in_cluster_server(environ) == server
