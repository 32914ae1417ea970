"""Stream's webhook signature (stream-protocol.md §1.2, §1.3).

``X-Signature`` is hex(HMAC-SHA256(key=API secret, msg=uncompressed JSON body)).  Stream may gzip
the body; like the official SDK we detect gzip by its magic bytes, not by a header, and verify
the signature over the decompressed bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from collections.abc import Iterable

GZIP_MAGIC = b"\x1f\x8b"


class WebhookRejected(Exception):
    """A webhook we must refuse; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def expected_signature(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_matches(body: bytes, signature: str, secrets: Iterable[str]) -> bool:
    """True when any of the secrets (current and rotated-out ones) signed the body.  Every
    secret is tried, so the time taken does not tell which one matched."""
    presented = signature.strip().lower().encode("ascii", "replace")
    matched = False
    for secret in secrets:
        if hmac.compare_digest(presented, expected_signature(body, secret).encode("ascii")):
            matched = True
    return matched


def decompress_body(raw: bytes, max_bytes: int) -> bytes:
    """Gunzip a gzip body, refusing anything that inflates past ``max_bytes`` (a gzip bomb)."""
    if not raw.startswith(GZIP_MAGIC):
        return raw
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, max_bytes + 1)
    except zlib.error as error:
        raise WebhookRejected(400, "body is not valid gzip") from error
    if len(body) > max_bytes or inflater.unconsumed_tail:
        raise WebhookRejected(413, f"body larger than {max_bytes} bytes once decompressed")
    if not inflater.eof:
        raise WebhookRejected(400, "gzip body is truncated")
    return body


def verify_webhook(
    raw: bytes, signature: str | None, secrets: Iterable[str], max_bytes: int
) -> bytes:
    """Return the uncompressed, authenticated body or raise :class:`WebhookRejected`."""
    if not signature:
        raise WebhookRejected(401, "missing X-Signature header")
    body = decompress_body(raw, max_bytes)
    if not signature_matches(body, signature, secrets):
        raise WebhookRejected(401, "invalid signature")
    return body
