"""The command line every service has: `serve`, `migrate`, plus commands of its own (e.g. `seed`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from saga_common.persistence.db import ensure_database
from saga_common.persistence.migrations import pending_revision, upgrade
from saga_common.persistence.roles import grant_service_role
from saga_common.redaction import install_redaction, redact, settings_error
from saga_common.settings import ServiceSettings, redact_url


def service_cli(
    *,
    prog: str,
    settings_factory: Callable[[], ServiceSettings],
    app_factory: str,
    migrations_dir: Path,
    extra_commands: dict[str, tuple[str, Callable[[ServiceSettings], None]]] | None = None,
) -> Callable[[list[str] | None], None]:
    """Build the service's console-script entry point."""

    def main(argv: list[str] | None = None) -> None:
        parser = argparse.ArgumentParser(prog=prog, description=f"Run and manage the {prog}.")
        sub = parser.add_subparsers(dest="command", required=True)
        serve = sub.add_parser("serve", help="run the HTTP API, the consumer and the outbox relay")
        serve.add_argument("--host", help="overrides SAGA_HTTP_HOST")
        serve.add_argument("--port", type=int, help="overrides SAGA_HTTP_PORT")
        migrate = sub.add_parser("migrate", help="create the database if missing and apply the migrations")
        migrate.add_argument("--no-create", action="store_true", help="do not create the database")
        migrate.add_argument(
            "--check", action="store_true", help="change nothing; exit 1 unless every migration is applied"
        )
        for name, (help_text, _) in (extra_commands or {}).items():
            sub.add_parser(name, help=help_text)
        args = parser.parse_args(argv)
        install_redaction()

        try:
            settings = settings_factory()
        except ValidationError as exc:
            sys.exit(f"{prog}: invalid configuration:\n{settings_error(exc, _model(settings_factory))}")
        try:
            _run(args, settings)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - any failure: printed redacted, never as is
            # Drivers put the DSN (or part of it) in their errors; only the redacted text reaches the logs.
            if os.environ.get("SAGA_LOG_LEVEL", "").upper() == "DEBUG":
                print(redact("".join(traceback.format_exception(exc))), file=sys.stderr)
            sys.exit(f"{prog} {args.command}: {redact(f'{type(exc).__name__}: {exc}')}")

    def _run(args: argparse.Namespace, settings: ServiceSettings) -> None:
        if args.command == "serve":
            _serve(settings, app_factory, args.host, args.port)
        elif args.command == "migrate" and args.check:
            current, head = pending_revision(migrations_dir, settings.database_url)
            if current != head:
                sys.exit(f"{prog}: database at revision {current}, migrations at {head}: run `{prog} migrate`")
            print(f"{prog}: database at the latest revision ({head})")
        elif args.command == "migrate":
            if not args.no_create and asyncio.run(ensure_database(settings.database_url)):
                print(f"{prog}: created database {redact_url(settings.database_url)}")
            upgrade(migrations_dir, settings.database_url)
            print(f"{prog}: migrations applied to {redact_url(settings.database_url)}")
            if settings.service_database_role:
                password = settings.service_database_password
                asyncio.run(
                    grant_service_role(
                        settings.database_url,
                        settings.service_database_role,
                        password.get_secret_value() if password else None,
                    )
                )
                print(f"{prog}: role {settings.service_database_role} may read and write the tables, nothing else")
        else:
            (extra_commands or {})[args.command][1](settings)

    return main


def _model(settings_factory: Callable[[], ServiceSettings]) -> type[ServiceSettings]:
    return settings_factory if isinstance(settings_factory, type) else ServiceSettings


def _serve(settings: ServiceSettings, app_factory: str, host: str | None, port: int | None) -> None:
    import uvicorn

    from saga_common.web.limits import protocol_class

    settings.check_http_tls_files()
    uvicorn.run(
        app_factory,
        factory=True,
        host=host or settings.http_host,
        port=port or settings.http_port,
        log_config=None,  # the app installs JSON logging itself
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) + 5,
        loop="uvloop",
        # httptools with a bound on the request head and a deadline for the whole request (uvicorn has neither
        # for httptools; its h11 limit would cost the faster parser).
        http=protocol_class(
            max_head_bytes=settings.http_max_header_bytes, request_timeout_s=settings.http_request_timeout_s
        ),
        timeout_keep_alive=settings.http_keepalive_timeout_s,
        # TLS is done by the event loop's transport below `http=`: the protocol sees decrypted bytes only.
        ssl_certfile=settings.http_tls_cert_file,
        ssl_keyfile=settings.http_tls_key_file,
        lifespan="on",
    )
