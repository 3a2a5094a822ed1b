"""``multipart/form-data`` bodies: where ``clickhouse-connect`` puts the query and its
``param_<name>`` values once they exceed 4 KiB (too long for a URL).

Only plain form fields are supported; file parts (ClickHouse "external data" tables)
are refused rather than ignored.
"""

from __future__ import annotations

from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP

from plantstream.services.hotstore.errors import BAD_ARGUMENTS, NOT_IMPLEMENTED, ClickHouseError


def parse_form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The form's fields, name to text value."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ClickHouseError.own(BAD_ARGUMENTS, "Malformed multipart/form-data body")
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise ClickHouseError.own(BAD_ARGUMENTS, "A multipart/form-data part has no name")
        if part.get_filename() is not None:
            raise ClickHouseError.own(NOT_IMPLEMENTED, "External data (file parts in multipart/form-data)")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        fields[name] = data.decode(part.get_content_charset() or "utf-8")
    return fields
