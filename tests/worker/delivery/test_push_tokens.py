"""worker.delivery.push_tokens: what an APNs and an FCM token may look like at registration."""

from __future__ import annotations

import pytest

from worker.delivery.push_tokens import token_problem
from worker.push.base import Platform


@pytest.mark.parametrize(
    "token",
    [
        "ab" * 32,  # today's 32 bytes
        "AB" * 32,
        "0123abcd" * 4,  # 16 bytes, the shortest accepted
        "ab" * 100,  # 100 bytes: longer tokens may come
    ],
)
def test_apns_tokens_of_whole_hex_bytes_are_accepted(token):
    assert token_problem(Platform.APNS, token) is None


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("", "hexadecimal"),
        ("ab" * 31 + "zz", "hexadecimal"),
        ("<" + "ab" * 32 + ">", "hexadecimal"),  # NSData's description, pasted
        ("ab cd" * 13, "hexadecimal"),
        ("a" * 65, "even number"),
        ("ab" * 15, "32 to 200 hex digits"),
        ("ab" * 101, "32 to 200 hex digits"),
    ],
)
def test_apns_tokens_that_cannot_be_are_refused(token, why):
    problem = token_problem(Platform.APNS, token)
    assert problem is not None and why in problem


@pytest.mark.parametrize(
    "token",
    [
        # The shape of a real registration token: instance id, colon, APA91b and ~140 more.
        "dXyzAbC0123:APA91bH" + "-_AbCdEfGh0123456789" * 7,
        "x" * 32,
        "y" * 512,
    ],
)
def test_fcm_tokens_are_accepted(token):
    assert token_problem(Platform.FCM, token) is None


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("x" * 31, "32 to 512"),
        ("x" * 513, "32 to 512"),
        ("a b" * 20, "may only contain"),
        ("token/with+base64=" * 3, "may only contain"),
        ("é" * 40, "may only contain"),
    ],
)
def test_fcm_tokens_that_cannot_be_are_refused(token, why):
    problem = token_problem(Platform.FCM, token)
    assert problem is not None and why in problem
