"""Stream tokens presented to callpush's API: user vs server, rotation, and every rejection."""

from __future__ import annotations

import time

import jwt
import pytest

from worker.foundation.settings import StreamAppSettings
from worker.stream.user_tokens import (
    Caller,
    TokenRejected,
    token_from_authorization,
    verify_authorization,
    verify_token,
)

# 64 bytes, so PyJWT's InsecureKeyLengthWarning stays quiet even for the HS512 forgery.
SECRET = "s" * 32 + "0123456789abcdef0123456789abcdef"
OLD_SECRET = "o" * 32 + "0123456789abcdef0123456789abcdef"
OTHER_APP_SECRET = "p" * 32 + "0123456789abcdef0123456789abcdef"
WRONG_SECRET = "w" * 64

APPS = [
    StreamAppSettings(api_key="prod-key", api_secrets=[SECRET, OLD_SECRET]),
    StreamAppSettings(api_key="dev-key", api_secrets=[OTHER_APP_SECRET]),
]


def token(claims: dict, secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def rejected(tok: str) -> str:
    with pytest.raises(TokenRejected) as info:
        verify_token(tok, APPS)
    # Never echo the token or a secret back.
    for secret in (tok, SECRET, OLD_SECRET, OTHER_APP_SECRET):
        assert secret not in info.value.message
    return info.value.message


def test_user_token_without_timestamps_is_a_user():
    assert verify_token(token({"user_id": "alice"}), APPS) == Caller("alice", False, "prod-key")


def test_server_token_is_a_server():
    assert verify_token(token({"server": True}), APPS) == Caller(None, True, "prod-key")


def test_rotated_out_secret_and_second_app_are_accepted():
    assert verify_token(token({"user_id": "a"}, OLD_SECRET), APPS).api_key == "prod-key"
    assert verify_token(token({"user_id": "a"}, OTHER_APP_SECRET), APPS).api_key == "dev-key"


def test_valid_exp_iat_nbf_are_accepted_and_leeway_applies():
    now = int(time.time())
    ok = {"user_id": "alice", "iat": now, "nbf": now, "exp": now + 3600}
    assert verify_token(token(ok), APPS).user_id == "alice"
    # Expired 5 s ago / issued 5 s in the future: within the 10 s leeway.
    skewed = {"user_id": "alice", "iat": now + 5, "exp": now - 5}
    assert verify_token(token(skewed), APPS).user_id == "alice"


def test_expired_token_is_rejected():
    assert rejected(token({"user_id": "alice", "exp": int(time.time()) - 60})) == "token expired"


@pytest.mark.parametrize("claim", ["iat", "nbf"])
def test_token_from_the_future_is_rejected(claim):
    message = rejected(token({"user_id": "alice", claim: int(time.time()) + 120}))
    assert "not yet valid" in message


def test_non_numeric_exp_is_rejected():
    assert "invalid token" in rejected(token({"user_id": "alice", "exp": "tomorrow"}))


def test_wrong_secret_is_rejected():
    assert "signature" in rejected(token({"user_id": "alice"}, WRONG_SECRET))


def test_tampered_payload_is_rejected():
    header, _payload, signature = token({"user_id": "alice"}).split(".")
    forged_payload = token({"user_id": "bob"}).split(".")[1]
    assert "signature" in rejected(f"{header}.{forged_payload}.{signature}")


def test_alg_none_is_rejected():
    assert "algorithm" in rejected(jwt.encode({"user_id": "alice"}, None, algorithm="none"))


def test_hs512_is_rejected_even_with_the_right_secret():
    assert "only HS256" in rejected(token({"user_id": "alice"}, SECRET, "HS512"))


@pytest.mark.parametrize("garbage", ["abc", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30", "x" * 5000])
def test_malformed_tokens_are_rejected(garbage):
    assert "malformed" in rejected(garbage)


@pytest.mark.parametrize("user_id", [123, "", None, ["alice"], {"id": "alice"}])
def test_user_id_must_be_a_non_empty_string(user_id):
    assert "user_id must be a non-empty string" in rejected(token({"user_id": user_id}))


def test_no_configured_app_rejects_everything():
    with pytest.raises(TokenRejected, match="no Stream app"):
        verify_token(token({"user_id": "alice"}), [])


@pytest.mark.parametrize(
    "header_format", ["Bearer {}", "bearer {}", "BEARER  {}", "{}", "  Bearer {}  "]
)
def test_authorization_header_forms(header_format):
    tok = token({"user_id": "alice"})
    assert verify_authorization(header_format.format(tok), APPS).user_id == "alice"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing Authorization"),
        ("", "missing Authorization"),
        ("   ", "missing Authorization"),
        ("Basic YWxpY2U6cHc=", "unsupported Authorization scheme"),
        ("Bearer ", "malformed"),  # the bare word "Bearer" is no JWT
        ("Bearer not-a-jwt", "malformed"),
    ],
)
def test_bad_authorization_headers(header, message):
    with pytest.raises(TokenRejected) as info:
        verify_authorization(header, APPS)
    assert message in info.value.message


def test_token_from_authorization_strips_the_scheme():
    assert token_from_authorization("Bearer a.b.c") == "a.b.c"
    assert token_from_authorization("a.b.c") == "a.b.c"


def test_naming_the_app_tries_only_its_secrets():
    prod_token = token({"user_id": "alice"})
    assert verify_token(prod_token, APPS, api_key="prod-key").api_key == "prod-key"
    with pytest.raises(TokenRejected, match="invalid token signature"):
        verify_token(prod_token, APPS, api_key="dev-key")
    with pytest.raises(TokenRejected, match="api_key is not the API key"):
        verify_token(prod_token, APPS, api_key="nope")


def test_a_token_two_apps_verify_is_refused_unless_the_app_is_named():
    shared = [
        StreamAppSettings(api_key="prod-key", api_secrets=[SECRET]),
        StreamAppSettings(api_key="dev-key", api_secrets=[OTHER_APP_SECRET, SECRET]),
    ]
    tok = token({"user_id": "alice"})
    with pytest.raises(TokenRejected, match="several Stream apps"):
        verify_token(tok, shared)
    assert verify_token(tok, shared, api_key="dev-key") == Caller("alice", False, "dev-key")


def test_a_user_id_with_nul_is_refused():
    assert "NUL" in rejected(token({"user_id": "al\x00ice"}))
