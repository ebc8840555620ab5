"""Access tokens: issue/verify round trip, and every forgery or malformation refused."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

from serving.access.principals import NotAuthenticated, Role
from serving.access.tokens import MAX_TOKEN_LENGTH, InvalidToken, TokenService

SECRET = "s" * 40


@pytest.fixture
def tokens() -> TokenService:
    return TokenService(SECRET, issuer="carprice", audience="carprice-api", ttl=600, leeway=10)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "42",
        "role": "predict",
        "iat": now,
        "exp": now + 600,
        "iss": "carprice",
        "aud": "carprice-api",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def sign(payload: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    return str(jwt.encode(payload, key, algorithm=algorithm))


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_round_trip(tokens: TokenService) -> None:
    issued = tokens.issue(42, Role.ADMIN)
    assert issued.expires_in == 600
    assert issued.token_type == "bearer"
    got = tokens.decode(issued.access_token)
    assert (got.user_id, got.role) == (42, Role.ADMIN)
    assert got.expires_at - got.issued_at == 600
    header = jwt.get_unverified_header(issued.access_token)
    assert header["alg"] == "HS256"
    payload = jwt.get_unverified_claims(issued.access_token)
    assert set(payload) == {"sub", "role", "iat", "exp", "iss", "aud"}


def test_invalid_token_is_a_not_authenticated_error() -> None:
    assert issubclass(InvalidToken, NotAuthenticated)


def test_a_hand_made_token_with_every_claim_is_accepted(tokens: TokenService) -> None:
    assert tokens.decode(sign(claims())).user_id == 42


def test_leeway_tolerates_small_clock_skew(tokens: TokenService) -> None:
    now = int(time.time())
    assert tokens.decode(sign(claims(exp=now - 5, iat=now - 600))).user_id == 42
    assert tokens.decode(sign(claims(iat=now + 5))).user_id == 42


def _alg_none() -> str:
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."


def _tampered() -> str:
    header, _payload, signature = sign(claims()).split(".")
    return f"{header}.{b64(claims(role='admin'))}.{signature}"


def _rsa_keys() -> tuple[str, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


def _rs256() -> str:
    private_pem, _ = _rsa_keys()
    return sign(claims(), key=private_pem, algorithm="RS256")


def _hs256_signed_with_public_key() -> str:
    # The HS/RS confusion attack: an RS verifier fed an HS token signed with its public key.
    _, public_pem = _rsa_keys()
    header = b64({"alg": "HS256", "typ": "JWT"})
    payload = b64(claims(role="admin"))
    import hashlib
    import hmac

    mac = hmac.new(public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _header_alg_swapped() -> str:
    # HS512 signature, header relabelled HS256.
    _, payload, signature = sign(claims(), algorithm="HS512").split(".")
    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{payload}.{signature}"


BAD_TOKENS = {
    "alg none": _alg_none,
    "alg none, uppercase": lambda: f"{b64({'alg': 'None'})}.{b64(claims())}.",
    "tampered payload": _tampered,
    "another key": lambda: sign(claims(), key="another-secret-" + "y" * 30),
    "other HMAC algorithm (HS512)": lambda: sign(claims(), algorithm="HS512"),
    "header algorithm swapped": _header_alg_swapped,
    "RS256": _rs256,
    "HS256 signed with an RSA public key": _hs256_signed_with_public_key,
    "expired": lambda: sign(claims(exp=int(time.time()) - 60, iat=int(time.time()) - 700)),
    "not yet valid (nbf)": lambda: sign(claims(nbf=int(time.time()) + 120)),
    "issued in the future": lambda: sign(claims(iat=int(time.time()) + 120)),
    "missing exp": lambda: sign(claims(exp=...)),
    "missing iat": lambda: sign(claims(iat=...)),
    "missing sub": lambda: sign(claims(sub=...)),
    "missing role": lambda: sign(claims(role=...)),
    "missing aud": lambda: sign(claims(aud=...)),
    "wrong aud": lambda: sign(claims(aud="someone-else")),
    "missing iss": lambda: sign(claims(iss=...)),
    "wrong iss": lambda: sign(claims(iss="evil")),
    "unknown role": lambda: sign(claims(role="root")),
    "numeric sub": lambda: sign(claims(sub=42)),
    "non-numeric sub": lambda: sign(claims(sub="alice")),
    "exp as object": lambda: sign(claims(exp={"a": 1})),
    "exp as list": lambda: sign(claims(exp=[1])),
    "exp as null": lambda: sign(claims(exp=None)),
    "exp as string": lambda: sign(claims(exp="tomorrow")),
    "exp huge float": lambda: sign(claims(exp=1e308)),
    "iat as float": lambda: sign(claims(iat=time.time())),
    "empty": lambda: "",
    "garbage": lambda: "not-a-token",
    "two dots of garbage": lambda: "a.b.c",
    "bad base64 header": lambda: "!!!." + b64(claims()) + ".sig",
    "header is a list": lambda: f"{base64.urlsafe_b64encode(b'[1]').decode()}.{b64(claims())}.x",
    "non-ascii": lambda: "é." + b64(claims()) + ".x",
    "oversized": lambda: "a." + "b" * MAX_TOKEN_LENGTH + ".c",
    "payload not JSON": lambda: f"{b64({'alg': 'HS256'})}.bm90IGpzb24.x",
}


@pytest.mark.parametrize("make", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_bad_tokens_are_refused(tokens: TokenService, make: Any) -> None:
    with pytest.raises(InvalidToken):
        tokens.decode(make())


def test_only_the_configured_algorithm_is_accepted() -> None:
    hs512 = TokenService(SECRET, algorithm="HS512")
    token = hs512.issue(1, Role.PREDICT).access_token
    assert hs512.decode(token).user_id == 1
    with pytest.raises(InvalidToken):
        TokenService(SECRET, algorithm="HS256").decode(token)


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        TokenService("")
