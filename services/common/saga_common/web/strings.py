"""Text that PostgreSQL and a UTF-8 answer can carry: a string input with a NUL character (PostgreSQL refuses
U+0000 in text) or a lone surrogate (JSON's "\\ud800" escape decodes to one; it has no UTF-8 encoding) is a 422
naming the field, not a 500 from the database driver or the response encoder."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator


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
