"""Text that PostgreSQL and a UTF-8 answer can carry: a string input with a NUL character (PostgreSQL refuses
U+0000 in text) or a lone surrogate (JSON's "\\ud800" escape decodes to one; it has no UTF-8 encoding) is a 422
naming the field, not a 500 from the database driver or the response encoder. An instant is written as the
OpenAPI document says (a date-time), not as the number of seconds pydantic would also accept."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator


def check_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"must be valid Unicode text: a lone surrogate (U+{ord(value[exc.start]):04X}) at position {exc.start}"
        ) from None
    return value


Text = Annotated[str, AfterValidator(check_text)]

_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def check_date_time(value: Any) -> Any:
    if isinstance(value, str) and not _DATE_TIME.match(value):
        raise ValueError("must be an RFC 3339 date-time with its offset, e.g. 2026-12-04T10:00:00Z")
    return value


# An instant with its offset, e.g. `2026-12-04T10:00:00Z`; `0.5` (a Unix time to pydantic) is a 422 too.
Instant = Annotated[AwareDatetime, BeforeValidator(check_date_time)]


def encodable(value: Any) -> Any:
    """`value` (an error's echoed input, its location) with every string made UTF-8-encodable: a lone
    surrogate is shown escaped (`\\ud800`), so the 422 that reports it can be sent at all."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {encodable(key): encodable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encodable(item) for item in value]
    return value
