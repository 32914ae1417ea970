import gzip

import pytest

from worker.stream.signature import (
    WebhookRejected,
    decompress_body,
    expected_signature,
    signature_matches,
    verify_webhook,
)

# stream-protocol.md §1.2: stream-py's tests/assets/webhooks/call.session_started fixture.
VECTOR_BODY = b'{"type":"call.session_started","created_at":1778198400000000000}'
VECTOR_SECRET = "test_secret_do_not_use_in_production"
VECTOR_SIGNATURE = "9c65b50bfdf1e8205ba673103a21d3fda71d6969f9003c0f2cdaf43467f6ab07"


def test_stream_test_vector():
    assert expected_signature(VECTOR_BODY, VECTOR_SECRET) == VECTOR_SIGNATURE
    assert verify_webhook(VECTOR_BODY, VECTOR_SIGNATURE, [VECTOR_SECRET], 1024) == VECTOR_BODY


def test_signature_is_over_the_uncompressed_body():
    compressed = gzip.compress(VECTOR_BODY)
    assert verify_webhook(compressed, VECTOR_SIGNATURE, [VECTOR_SECRET], 1024) == VECTOR_BODY
    with pytest.raises(WebhookRejected) as rejected:
        verify_webhook(
            compressed, expected_signature(compressed, VECTOR_SECRET), [VECTOR_SECRET], 1024
        )
    assert rejected.value.status == 401


def test_uppercase_hex_and_whitespace_are_accepted():
    assert signature_matches(VECTOR_BODY, f" {VECTOR_SIGNATURE.upper()} ", [VECTOR_SECRET])


def test_any_of_the_rotated_secrets_verifies():
    assert signature_matches(VECTOR_BODY, VECTOR_SIGNATURE, ["new-secret", VECTOR_SECRET])
    assert not signature_matches(VECTOR_BODY, VECTOR_SIGNATURE, ["new-secret", "older-secret"])


@pytest.mark.parametrize(
    ("signature", "status"),
    [(None, 401), ("", 401), ("0" * 64, 401), ("not hex at all ✓", 401)],
)
def test_missing_or_wrong_signature_is_401(signature, status):
    with pytest.raises(WebhookRejected) as rejected:
        verify_webhook(VECTOR_BODY, signature, [VECTOR_SECRET], 1024)
    assert rejected.value.status == status


def test_one_byte_changed_fails():
    tampered = VECTOR_BODY.replace(b"1778", b"1779")
    assert not signature_matches(tampered, VECTOR_SIGNATURE, [VECTOR_SECRET])


def test_gzip_bomb_is_refused_without_inflating_it():
    bomb = gzip.compress(b"{" + b" " * 50_000_000 + b"}")
    assert len(bomb) < 100_000
    with pytest.raises(WebhookRejected) as rejected:
        decompress_body(bomb, max_bytes=1024 * 1024)
    assert rejected.value.status == 413


def test_broken_gzip_is_400():
    with pytest.raises(WebhookRejected) as rejected:
        decompress_body(b"\x1f\x8bnot really gzip", 1024)
    assert rejected.value.status == 400
    with pytest.raises(WebhookRejected) as truncated:
        decompress_body(gzip.compress(VECTOR_BODY)[:-8], 1024)
    assert truncated.value.status == 400
