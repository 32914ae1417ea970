"""Throw-away credentials for the fakes: a TLS CA, an APNs .p8 key, a Google service account.

Nothing here is secret: every key is generated per test session and lives in a temp directory.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SERVICE_ACCOUNT_EMAIL = "push@test-project.iam.gserviceaccount.com"
PROJECT_ID = "test-project"


def make_apns_key() -> tuple[str, ec.EllipticCurvePublicKey]:
    """An ES256 key as Apple issues it (.p8 = PKCS8 PEM) and its public half."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, key.public_key()


@dataclass(frozen=True)
class PushCredentials:
    directory: Path
    ca: trustme.CA
    ca_file: Path  # PEM of the CA, for ApnsSettings.ca_file
    apns_key_file: Path  # the .p8 (PKCS8 PEM) key
    apns_public_key: ec.EllipticCurvePublicKey
    service_account_key_pem: str  # RSA private key for the service-account JSON

    def server_ssl_context(self, *hostnames: str) -> ssl.SSLContext:
        """TLS context for the fake APNs: a cert for localhost/127.0.0.1, offering h2."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*(hostnames or ("localhost", "127.0.0.1"))).configure_cert(context)
        context.set_alpn_protocols(["h2"])
        return context

    def write_service_account(
        self, path: Path, token_uri: str, project_id: str = PROJECT_ID
    ) -> Path:
        """A service-account JSON whose token_uri points at the fake's /token."""
        info = {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": "k1",
            "private_key": self.service_account_key_pem,
            "client_email": SERVICE_ACCOUNT_EMAIL,
            "client_id": "1",
            "token_uri": token_uri,
        }
        path.write_text(json.dumps(info))
        return path


def make_push_credentials(directory: Path) -> PushCredentials:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    pem, public_key = make_apns_key()
    key_file = directory / "AuthKey_ABC123DEFG.p8"
    key_file.write_text(pem)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return PushCredentials(
        directory=directory,
        ca=ca,
        ca_file=ca_file,
        apns_key_file=key_file,
        apns_public_key=public_key,
        service_account_key_pem=rsa_pem,
    )
