"""Stream tokens presented to callpush's own API (``Authorization: Bearer <jwt>``).

A Stream token is an HS256 JWT signed with the app's API secret (push-libraries.md §4):

* a **user token** carries ``user_id`` (a non-empty string): the caller acts as that user only;
* a **server token** carries no ``user_id`` (Stream's own is ``{"server": true}``): the caller
  holds the API secret and may act for any user.

Stream's SDKs usually mint tokens without ``exp``/``iat``, so neither is required; when present,
``exp``, ``nbf`` and ``iat`` are enforced with a small leeway.  The algorithm is pinned to HS256
(no ``alg: none``, no other HMAC size).  Every secret of every configured app is tried, the
current ``api_secret`` and the ``previous_api_secrets``, so tokens minted with a rotated-out secret
keep working for as long as it is still listed (README: rotating the API secret).

The app whose secret verified the token is the caller's app, and the caller acts only inside it
(Stream apps are tenants: a development app's token never touches production's users).  A
caller may name its app the way Stream's clients do (``?api_key=`` or ``X-Api-Key``): then only
that app's secrets are tried.  A token that two apps' secrets verify (two apps sharing a secret)
is refused unless the app is named.

Nothing here logs or returns any part of a token or a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from worker.foundation.settings import StreamAppSettings

ALGORITHM = "HS256"
LEEWAY_SECONDS = 10
# Stream tokens are a few hundred bytes; anything this long is not one.
MAX_TOKEN_LENGTH = 4096


class TokenRejected(Exception):
    """The token cannot authenticate anyone.  ``message`` is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: a user (``user_id`` set) or a server (``is_server``, no ``user_id``)."""

    user_id: str | None
    is_server: bool
    api_key: str  # the Stream app whose secret signed the token


def token_from_authorization(header: str | None) -> str:
    """The JWT in an ``Authorization`` header: ``Bearer <jwt>`` or the bare JWT, as Stream's
    own clients send it."""
    value = (header or "").strip()
    if not value:
        raise TokenRejected("missing Authorization header (expected 'Bearer <Stream token>')")
    scheme, _, rest = value.partition(" ")
    if rest:
        if scheme.lower() != "bearer":
            raise TokenRejected(
                f"unsupported Authorization scheme {scheme[:20]!r} (expected 'Bearer')"
            )
        value = rest.strip()
        if not value:
            raise TokenRejected("empty bearer token")
    if len(value) > MAX_TOKEN_LENGTH:
        raise TokenRejected("malformed token: too long")
    return value


def verify_authorization(
    header: str | None,
    apps: Sequence[StreamAppSettings],
    *,
    api_key: str | None = None,
    leeway: float = LEEWAY_SECONDS,
) -> Caller:
    return verify_token(token_from_authorization(header), apps, api_key=api_key, leeway=leeway)


def verify_token(
    token: str,
    apps: Sequence[StreamAppSettings],
    *,
    api_key: str | None = None,
    leeway: float = LEEWAY_SECONDS,
) -> Caller:
    """Verify ``token`` against the secrets of the configured apps (of the app ``api_key``
    only, when given); raise :class:`TokenRejected`."""
    if not apps:
        raise TokenRejected("no Stream app is configured, so no token can be verified")
    if api_key is not None:
        apps = [app for app in apps if app.api_key == api_key]
        if not apps:
            raise TokenRejected("api_key is not the API key of a Stream app served here")
    _check_header(token)
    verified = [
        (app, claims)
        for app in apps
        if (claims := _verified_claims(token, app, leeway)) is not None
    ]
    if not verified:
        raise TokenRejected("invalid token signature: not signed by a configured Stream API secret")
    if len(verified) > 1:
        raise TokenRejected(
            "the token is valid for several Stream apps (they share a secret): name the app "
            "with ?api_key= or an X-Api-Key header"
        )
    app, claims = verified[0]
    return _caller(claims, app.api_key)


def _verified_claims(token: str, app: StreamAppSettings, leeway: float) -> dict[str, Any] | None:
    for secret in app.api_secrets:
        claims = _decode(token, secret.get_secret_value(), leeway)
        if claims is not None:
            return claims
    return None


def _check_header(token: str) -> None:
    # jwt.decode() below pins the algorithm as well; this only makes the message clearer.
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError as error:
        raise TokenRejected(f"malformed token: {error}") from None
    algorithm = header.get("alg")
    if algorithm != ALGORITHM:
        shown = algorithm[:16] if isinstance(algorithm, str) else type(algorithm).__name__
        raise TokenRejected(f"unsupported token algorithm {shown!r}: only {ALGORITHM} is accepted")


def _decode(token: str, secret: str, leeway: float) -> dict[str, Any] | None:
    """The claims when ``secret`` signed the token, None when it did not.

    PyJWT checks the signature before any claim, so an expired or immature token is reported
    only for the secret that really signed it.
    """
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            leeway=leeway,
            # Nothing is required (Stream SDK tokens lack exp/iat); exp, nbf and iat are still
            # verified whenever they are present.
            options={"require": [], "verify_exp": True, "verify_nbf": True, "verify_iat": True},
        )
    except jwt.InvalidSignatureError:
        return None
    except jwt.ExpiredSignatureError:
        raise TokenRejected("token expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenRejected("token not yet valid (nbf or iat is in the future)") from None
    except jwt.InvalidAlgorithmError:
        raise TokenRejected(f"unsupported token algorithm: only {ALGORITHM} is accepted") from None
    except jwt.InvalidTokenError as error:  # DecodeError, bad exp/iat types, aud, ...
        raise TokenRejected(f"invalid token: {error}") from None
    return claims


def _caller(claims: dict[str, Any], api_key: str) -> Caller:
    if "user_id" not in claims:
        return Caller(user_id=None, is_server=True, api_key=api_key)
    user_id = claims["user_id"]
    if not isinstance(user_id, str) or not user_id:
        raise TokenRejected("invalid token: user_id must be a non-empty string")
    try:
        user_id.encode("utf-8")  # a lone surrogate ("\ud800") can be stored nowhere
    except UnicodeEncodeError:
        raise TokenRejected("invalid token: user_id is not valid Unicode") from None
    if "\x00" in user_id:  # PostgreSQL text cannot hold NUL
        raise TokenRejected("invalid token: user_id contains a NUL character")
    return Caller(user_id=user_id, is_server=False, api_key=api_key)
