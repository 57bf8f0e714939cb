"""Credentials never printed: URLs shown redacted, and any text (errors, log lines) scrubbed of the secrets
this process was configured with.

Two layers, because neither is enough alone:

* patterns: a password in a URL's userinfo, a query parameter whose name says it is a secret (`?password=`,
  `?sslpassword=`, `?token=`...) and a libpq `password=` keyword are replaced by `***` wherever they appear,
  even in a URL that does not parse;
* known secrets: the passwords found in this process's environment (in any URL-holding variable, and in every
  variable whose name says it holds a secret) are replaced wherever they appear, in the forms a library may
  print them (as written, percent-decoded, JSON-escaped), so a driver that echoes half a broken DSN in its own
  words leaks nothing either. Secrets shorter than 4 characters and the development passwords (which are not
  secrets, and would scrub common words) are left to the patterns.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, unquote_plus

from pydantic import AliasChoices, BaseModel, ValidationError

MASK = "***"

# Names of query parameters and keywords that hold a secret (compared percent-decoded, lower-cased).
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|credential|sslkey|api[_-]?key|auth", re.IGNORECASE)
_SECRET_VARIABLE = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|API_?KEY", re.IGNORECASE)

_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
# userinfo "user:password@": the password runs to the last "@" of this URL (so an unencoded "@", "/", "#" or
# "?" in it is covered), never into the next URL of a comma-separated list.
_USERINFO = re.compile(
    rf"(?P<head>{_SCHEME}(?P<user>[^:/?#@\s,]*):)(?P<password>(?:(?!,\s*{_SCHEME})[^\s])*)@",
)
# The same in a whole setting value, where a space may be part of the password.
_USERINFO_ANY = re.compile(rf"(?P<head>{_SCHEME}(?P<user>[^:/?#@\s,]*):)(?P<password>(?:(?!,\s*{_SCHEME}).)*)@")
# "user:password@host/db" with no "//" after the scheme (a typo): the same, from the first ":" on.
_SCHEMELESS = re.compile(r"^(?P<head>\s*[^:/?#@\s,]*:)(?!//)(?P<password>.*)@")
_QUERY_PARAMETER = re.compile(r"(?P<head>[?&;](?P<name>[^=&#;?\s]+)=)(?P<value>[^&#;\s'\"]*)")
_KEYWORD = re.compile(
    r"(?P<head>\b(?P<name>[A-Za-z_]*(?:password|passwd|pwd|secret|token)[A-Za-z_]*)\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&,;'\"]+)",
    re.IGNORECASE,
)

_DEVELOPMENT_PASSWORDS = {"", "guest", "postgres", "password", "changeme"}
_MIN_SECRET_LENGTH = 4

_known: set[str] = set()
_environment_read = False


def redact_url(value: str) -> str:
    """A URL (or a comma-separated list of them, or something that only looks like one) fit to print."""
    if "://" not in value:
        value = _SCHEMELESS.sub(lambda m: f"{m['head']}{MASK}@", value)
    return _redact_patterns(value, _USERINFO_ANY)


def redact(text: str) -> str:
    """Any text fit to print: URL credentials masked and every known secret scrubbed."""
    for secret in sorted(_known_secrets(), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _redact_patterns(text, _USERINFO)


def register_environment(environ: Mapping[str, str] | None = None) -> None:
    """Remember every secret the environment holds: passwords in URL-valued variables, and the whole value of
    variables named like a secret."""
    environ = os.environ if environ is None else environ
    for name, value in environ.items():
        if "://" in value or "=" in value or "@" in value:
            _known.update(_forms(secrets_in(value)))
        if _SECRET_VARIABLE.search(name):
            _known.update(_forms({value}))


def install_redaction() -> None:
    """For a command-line entry point: read the environment's secrets now, and redact what an uncaught
    exception prints."""
    _known_secrets()

    def excepthook(kind: type[BaseException], exc: BaseException, tb: object) -> None:
        sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb))))  # type: ignore[arg-type]

    sys.excepthook = excepthook


def secrets_in(value: str) -> set[str]:
    """The passwords a URL, URL list or libpq keyword string holds, in every place one can hold one."""
    found = {match["password"] for match in _USERINFO_ANY.finditer(value)}
    if "://" not in value:
        found |= {match["password"] for match in _SCHEMELESS.finditer(value)}
    found |= {match["value"] for match in _QUERY_PARAMETER.finditer(value) if _secret_name(match["name"])}
    found |= {match["value"].strip("'\"") for match in _KEYWORD.finditer(value)}
    return {secret for secret in found if secret}


def _known_secrets() -> set[str]:
    global _environment_read
    if not _environment_read:
        _environment_read = True
        register_environment()
    return _known


def _forms(secrets: Iterable[str]) -> set[str]:
    forms: set[str] = set()
    for secret in secrets:
        # A parser that stops at a delimiter inside the password (an unencoded "/", "#", "@"...) prints a piece.
        decoded = {secret, unquote(secret), unquote_plus(secret)}
        for form in decoded | {piece for variant in decoded for piece in re.split(r"[/?#@,:;\s]", variant)}:
            forms.update({form, json.dumps(form)[1:-1], repr(form)[1:-1]})
    return {form for form in forms if len(form) >= _MIN_SECRET_LENGTH and form.lower() not in _DEVELOPMENT_PASSWORDS}


def _secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(unquote_plus(name)))


def _redact_patterns(text: str, userinfo: re.Pattern[str]) -> str:
    text = userinfo.sub(lambda m: f"{m['head']}{MASK}@" if m["password"] else m[0], text)
    text = _QUERY_PARAMETER.sub(lambda m: f"{m['head']}{MASK}" if _secret_name(m["name"]) else m[0], text)
    return _KEYWORD.sub(lambda m: f"{m['head']}{MASK}", text)


def settings_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """A settings ValidationError as lines "SETTING: reason", with no input value in them (pydantic's own text
    echoes the value: a mistyped URL, password included) and credentials redacted from the reasons."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        name = _setting_name(model, str(error["loc"][0])) if error["loc"] else "configuration"
        where = "".join(f"[{part}]" for part in error["loc"][1:])
        lines.append(f"  {name}{where}: {redact(error['msg'])}")
    return "\n".join(lines)


def _setting_name(model: type[BaseModel], loc: str) -> str:
    """The environment variable a field is read from (the loc is the field's name or the alias it came by)."""
    field = model.model_fields.get(loc)
    if field is None:
        return loc
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        alias = next((choice for choice in alias.choices if isinstance(choice, str)), None)
    if isinstance(alias, str):
        return alias
    prefix = str(model.model_config.get("env_prefix", ""))
    return f"{prefix}{loc}".upper()
