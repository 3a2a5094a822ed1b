"""ClickHouse-shaped errors, so ``clickhouse-connect`` raises ``DatabaseError`` with ClickHouse's text.

The client decides what to do from three things: the HTTP status (it retries 429/503/504,
so those are never used here), the ``X-ClickHouse-Exception-Code`` header and a body of the
form ``Code: N. DB::Exception: ... (NAME)``.  chDB already produces that text; errors raised
by the service itself are formatted the same way.
"""

from __future__ import annotations

import re

# Error codes of ClickHouse (src/Common/ErrorCodes.cpp) that the service raises itself.
BAD_ARGUMENTS = 36
NOT_IMPLEMENTED = 48
ABORTED = 236
AUTHENTICATION_FAILED = 516
STD_EXCEPTION = 1001

_CODE_NAMES = {
    BAD_ARGUMENTS: "BAD_ARGUMENTS",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    ABORTED: "ABORTED",
    AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
    STD_EXCEPTION: "STD_EXCEPTION",
}

# ClickHouse's own exceptionCodeToHTTPStatus, minus the 503/504 cases: clickhouse-connect
# retries those, which would replay a failed insert.
_HTTP_STATUS_BY_CODE: dict[int, int] = {
    194: 401,  # REQUIRED_PASSWORD
    192: 403,  # UNKNOWN_USER
    193: 403,  # WRONG_PASSWORD
    516: 403,  # AUTHENTICATION_FAILED
    6: 400, 25: 400, 26: 400, 27: 400, 36: 400, 38: 400, 41: 400, 42: 400, 43: 400,  # parse / argument errors
    53: 400, 62: 400, 72: 400, 117: 400, 321: 400, 427: 400,
    46: 404, 47: 404, 50: 404, 56: 404, 60: 404, 63: 404, 73: 404, 81: 404, 115: 404,  # UNKNOWN_*
    48: 501,  # NOT_IMPLEMENTED
    159: 408,  # TIMEOUT_EXCEEDED
}  # fmt: skip

_CODE_RE = re.compile(r"Code: (\d+)\. ")
_NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?: \(version [^)]*\))?\s*$")


class ClickHouseError(Exception):
    """An error to report to the client exactly as a ClickHouse server would."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text

    @classmethod
    def own(cls, code: int, message: str) -> ClickHouseError:
        """An error raised by the service itself, in ClickHouse's wording."""
        name = _CODE_NAMES.get(code, "UNKNOWN_EXCEPTION")
        return cls(code, f"Code: {code}. DB::Exception: {message}. ({name})")

    @classmethod
    def from_chdb(cls, exc: BaseException) -> ClickHouseError:
        """Recover ClickHouse's code and text from a chDB exception.

        chDB puts the server's message in the exception string, sometimes behind a
        Python-side prefix such as ``Streaming insert finish failed:``; that prefix is dropped.
        """
        message = str(exc)
        match = _CODE_RE.search(message)
        if match is None:
            return cls.own(STD_EXCEPTION, f"{type(exc).__name__}: {message}")
        return cls(int(match.group(1)), message[match.start() :].strip())

    @property
    def name(self) -> str:
        match = _NAME_RE.search(self.text)
        return match.group(1) if match else "UNKNOWN_EXCEPTION"

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS_BY_CODE.get(self.code, 500)

    def body(self, version: str) -> bytes:
        """The response body: ClickHouse's text with its version trailer and a newline."""
        text = self.text if "(version " in self.text else f"{self.text} (version {version})"
        return (text + "\n").encode()
