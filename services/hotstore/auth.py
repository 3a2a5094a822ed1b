"""The one user of the local hot store, checked the way ClickHouse's HTTP interface does.

``clickhouse-connect`` sends HTTP basic auth; other clients use the ``X-ClickHouse-User``/
``X-ClickHouse-Key`` headers or ``user``/``password`` URL parameters.  With none of them the
user is ``default`` with an empty password.  Credentials are compared in constant time and
never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from plantstream.services.hotstore.errors import AUTHENTICATION_FAILED, ClickHouseError


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***)"


def presented_credentials(headers: Mapping[str, str], params: Mapping[str, str]) -> Credentials:
    """The user and password a request carries (``default``/empty when it carries none)."""
    authorization = headers.get("Authorization", "")
    if authorization[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(authorization[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, password = "", ""
        return Credentials(user, password)
    if "X-ClickHouse-User" in headers or "X-ClickHouse-Key" in headers:
        return Credentials(headers.get("X-ClickHouse-User", "default"), headers.get("X-ClickHouse-Key", ""))
    return Credentials(params.get("user", "default"), params.get("password", ""))


def check(expected: Credentials, headers: Mapping[str, str], params: Mapping[str, str]) -> None:
    """Raise ClickHouse's AUTHENTICATION_FAILED (516) unless the request's credentials match."""
    given = presented_credentials(headers, params)
    user_ok = hmac.compare_digest(given.username.encode(), expected.username.encode())
    password_ok = hmac.compare_digest(given.password.encode(), expected.password.encode())
    if not (user_ok and password_ok):
        raise ClickHouseError.own(
            AUTHENTICATION_FAILED,
            f"{given.username}: Authentication failed: password is incorrect, or there is no user with such name",
        )
