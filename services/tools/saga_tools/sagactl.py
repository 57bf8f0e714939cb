"""sagactl: operate the saga from a terminal or a CronJob.

    sagactl order ID                      the order, its saga step by step, its trace id
    sagactl order ID cancel|expire|resend act on one saga (audited in its history)
    sagactl sagas [--status S] [--older-than 2m] [--customer ID] [--then ACTION [--dry-run]]
    sagactl why ID                        why its saga is where it is, in one sentence, and what fixes it
    sagactl dlq list|show|replay|purge    dead-lettered messages, with their reasons (grouped, filtered)
    sagactl reconcile [--dry-run]         find and repair inconsistencies between the two databases
    sagactl prune [--dry-run]             retention of sent outbox rows and old inbox records
    sagactl token --scope S [--customer ID]   a bearer token signed by the local development key
    sagactl jwks                          the local key's public JWKS (what the services verify with)

Tables by default, `--json` for scripts. Where to find things comes from the environment (see
docs/configuration.md): ORDER_SERVICE_URL, ORDER_DATABASE_URL, CUSTOMER_DATABASE_URL, RABBITMQ_BROKER_URL, and
the services' own SAGA_* retention and deadline settings. Exit codes: 0 done, 1 error, 3 needs a human.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from tabulate import tabulate

from saga_common.contract.topology import CUSTOMER_SERVICE, ORDER_SERVICE
from saga_common.persistence.db import CONNECT_TIMEOUT_S
from saga_common.redaction import install_redaction, redact, settings_error
from saga_common.settings import DEFAULT_BROKER_URL, redact_url, split_broker_urls
from saga_common.web.auth import SCOPES
from saga_tools import tokens
from saga_tools.dlq import DeadLetter, DeadLetterQueues
from saga_tools.dlq_triage import (
    DEFAULT_MAX_REPLAYS,
    GROUP_KEYS,
    Filters,
    group_counts,
    parse_group_by,
    parse_since,
    plan_replay,
)
from saga_tools.order_api import ACTIONS, OrderApi, OrderApiError
from saga_tools.reconcile import DatabaseUnreachable, reconcile
from saga_tools.retention import DEFAULT_HISTORY_RETENTION_S, inbox_window, prune
from saga_tools.why import diagnose, render
from saga_tools.why_collect import Where, collect

EXIT_ERROR = 1
EXIT_NEEDS_ATTENTION = 3
SERVICES = {
    "order": ORDER_SERVICE,
    "customer": CUSTOMER_SERVICE,
    ORDER_SERVICE: ORDER_SERVICE,
    CUSTOMER_SERVICE: CUSTOMER_SERVICE,
}
DATABASE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class SagactlSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    order_service_url: str = Field("http://127.0.0.1:8001", validation_alias="ORDER_SERVICE_URL")
    customer_service_url: str = Field("http://127.0.0.1:8002", validation_alias="CUSTOMER_SERVICE_URL")
    retry_delays_ms: list[int] = Field([500, 2000, 10000], validation_alias="SAGA_RETRY_DELAYS_MS")
    order_database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/orders", validation_alias="ORDER_DATABASE_URL"
    )
    customer_database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/customers", validation_alias="CUSTOMER_DATABASE_URL"
    )
    rabbitmq_broker_url: str = Field(DEFAULT_BROKER_URL, validation_alias="RABBITMQ_BROKER_URL")
    jaeger_ui_url: str | None = Field(None, validation_alias="JAEGER_UI_URL")
    token: str | None = Field(None, validation_alias="SAGACTL_TOKEN", repr=False)
    signing_key: Path = Field(tokens.DEFAULT_KEY_PATH, validation_alias="SAGA_DEV_SIGNING_KEY")
    outbox_retention_s: float = Field(7 * 86400, gt=0, validation_alias="SAGA_OUTBOX_RETENTION_S")
    inbox_retention_s: float = Field(7 * 86400, gt=0, validation_alias="SAGA_INBOX_RETENTION_S")
    history_retention_s: float = Field(DEFAULT_HISTORY_RETENTION_S, gt=0, validation_alias="SAGA_HISTORY_RETENTION_S")
    deadline_s: float = Field(30.0, gt=0, validation_alias="SAGA_DEADLINE_S")
    reconcile_grace_s: float = Field(60.0, ge=0, validation_alias="SAGA_RECONCILE_GRACE_S")


class CommandError(Exception):
    """A failure the user can act on; printed without a traceback."""


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    install_redaction()
    try:
        settings = SagactlSettings()
    except ValidationError as exc:
        sys.exit(f"sagactl: invalid configuration:\n{settings_error(exc, SagactlSettings)}")
    try:
        code = asyncio.run(args.handler(args, settings))
    except CommandError as exc:
        # The drivers' errors may quote the URL they were given.
        print(redact(f"sagactl: {exc}"), file=sys.stderr)
        code = EXIT_ERROR
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sagactl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[..., Awaitable[int]], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.set_defaults(handler=handler)
        return sub

    order = command("order", _order, "show an order, its saga timeline and its trace id; or act on its saga")
    order.add_argument("order_id", type=int, help="the order's id")
    order.add_argument(
        "action",
        nargs="?",
        choices=list(ACTIONS),
        help="cancel it; expire it (reject now, releasing any credit); resend its saga's last event (same id)",
    )
    sagas = command("sagas", _sagas, "find sagas by status, age and customer; optionally act on each")
    sagas.add_argument(
        "--status",
        default="pending,cancelling",
        help="comma-separated statuses (default: pending,cancelling, the sagas still at work)",
    )
    sagas.add_argument("--older-than", type=_duration, metavar="AGE", help="created more than AGE ago: 90s, 2m, 1h, 3d")
    sagas.add_argument("--customer", type=int, metavar="ID", help="only this customer's orders")
    sagas.add_argument("--limit", type=int, default=1000, help="at most this many per status (default 1000)")
    sagas.add_argument("--then", choices=list(ACTIONS), help="then cancel, expire or resend each one found")
    sagas.add_argument("--dry-run", action="store_true", help="with --then: say what would be done, do nothing")

    why = command("why", _why, "diagnose one order: why its saga is where it is, and the command that fixes it")
    why.add_argument("order_id", type=int, help="the order's id")

    dlq = commands.add_parser("dlq", help="dead-lettered messages: list, show, replay, purge")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    service_help = "which service's dead-letter queue (default: all)"

    def dlq_command(name: str, handler: Callable[..., Awaitable[int]], help_text: str) -> argparse.ArgumentParser:
        sub = dlq_commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.add_argument("--service", choices=[*SERVICES, "all"], default="all", help=service_help)
        sub.set_defaults(handler=handler)
        return sub

    listing = dlq_command("list", _dlq_list, "list the dead-lettered messages with their reasons")
    listing.add_argument("--group-by", help=f"count them per group instead: any of {', '.join(GROUP_KEYS)}")
    _dlq_filters(listing)
    show = dlq_command("show", _dlq_show, "show one dead-lettered message: headers and body")
    show.add_argument("message", help="its message id (or #N, its position in `list`)")
    replay = dlq_command("replay", _dlq_replay, "send dead-lettered messages back to their queue after a fix")
    which = replay.add_mutually_exclusive_group()
    which.add_argument("message", nargs="?", help="its message id (or #N)")
    which.add_argument("--all", action="store_true", help="replay every dead-lettered message (or every match)")
    _dlq_filters(replay)
    replay.add_argument("--dry-run", action="store_true", help="show what would be replayed; nothing moves")
    replay.add_argument("--max", type=int, metavar="N", help="replay at most N messages (the rest stay)")
    replay.add_argument("--rate", type=float, metavar="R", default=50.0, help="messages a second (default 50)")
    replay.add_argument(
        "--max-replays",
        type=int,
        default=DEFAULT_MAX_REPLAYS,
        metavar="N",
        help=f"refuse a message already replayed N times (default {DEFAULT_MAX_REPLAYS})",
    )
    replay.add_argument(
        "--force", action="store_true", help="also replay messages older than the inbox's deduplication window"
    )
    purge = dlq_command("purge", _dlq_purge, "delete every dead-lettered message (asks for confirmation)")
    purge.add_argument("--yes", action="store_true", help="do not ask")

    rec = command("reconcile", _reconcile, "find and repair what is inconsistent between the two databases")
    rec.add_argument("--dry-run", action="store_true", help="report only, change nothing")
    prn = command("prune", _prune, "delete sent outbox rows and inbox records past their retention")
    prn.add_argument("--dry-run", action="store_true", help="count only, delete nothing")

    tok = commands.add_parser(
        "token",
        help="mint a bearer token with the local development signing key (created on first use)",
        description="Mint a bearer token signed by the local development key (SAGA_DEV_SIGNING_KEY, default "
        f"{tokens.DEFAULT_KEY_PATH}); the services verify it with SAGA_AUTH_JWKS_URL=file://<key>.jwks.json. "
        "For development and tests only: a real deployment's tokens come from its identity provider.",
    )
    tok.add_argument(
        "--scope",
        action="append",
        default=[],
        help=f"a scope to grant (repeatable): {', '.join(SCOPES)}, or the operator scope (saga:operator)",
    )
    tok.add_argument("--all-scopes", action="store_true", help="every scope of both APIs")
    tok.add_argument("--customer", type=int, help="bind the token to this customer id")
    tok.add_argument("--subject", default="sagactl", help="the token's sub (default: sagactl)")
    tok.add_argument("--ttl", type=float, default=3600, help="seconds until it expires (default 3600)")
    tok.add_argument("--issuer", default=tokens.DEFAULT_ISSUER, help=f"iss (default {tokens.DEFAULT_ISSUER})")
    tok.add_argument("--audience", default=tokens.DEFAULT_AUDIENCE, help=f"aud (default {tokens.DEFAULT_AUDIENCE})")
    tok.set_defaults(handler=_token)
    jwks = commands.add_parser("jwks", help="print the local development key's public JWKS")
    jwks.set_defaults(handler=_jwks)
    return parser


async def _token(args: argparse.Namespace, settings: SagactlSettings) -> int:
    scopes = list(dict.fromkeys([*args.scope, *(SCOPES if args.all_scopes else ())]))
    if not scopes:
        raise CommandError("name at least one --scope (or --all-scopes)")
    key = tokens.ensure_key(settings.signing_key)
    print(
        tokens.mint(
            key,
            subject=args.subject,
            scopes=scopes,
            customer_id=args.customer,
            issuer=args.issuer,
            audience=args.audience,
            ttl_s=args.ttl,
        )
    )
    return 0


async def _jwks(args: argparse.Namespace, settings: SagactlSettings) -> int:
    print(json.dumps(tokens.jwks_of(tokens.ensure_key(settings.signing_key)), indent=2))
    return 0


def _emit(args: argparse.Namespace, data: Any, human: Callable[[], str]) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else human())


# --- order -----------------------------------------------------------------------------------------


async def _order(args: argparse.Namespace, settings: SagactlSettings) -> int:
    async with OrderApi(settings.order_service_url, settings.token) as api:
        try:
            if args.action:
                done = await api.act(args.order_id, args.action)
                _emit(args, done, lambda: _acted(args.action, args.order_id, done))
                return 0
            order = await api.order(args.order_id)
            saga = await api.saga(args.order_id)
        except OrderApiError as exc:
            raise CommandError(str(exc)) from None
    data = {"order": order, "saga": saga}
    if settings.jaeger_ui_url and saga["trace_id"]:
        data["trace_url"] = f"{settings.jaeger_ui_url.rstrip('/')}/trace/{saga['trace_id']}"

    def human() -> str:
        head = [
            f"order {order['id']}: {order['status']}"
            + (f" ({order['rejection_reason']})" if order["rejection_reason"] else ""),
            f"customer {order['customer_id']}, product {order['product_id']} x{order['quantity']}, "
            f"{order['total_price']}",
            f"trace id: {saga['trace_id'] or '(tracing off)'}"
            + (f"  {data['trace_url']}" if "trace_url" in data else ""),
            "",
        ]
        rows = [
            [
                s["at"] or "(not yet)",
                s["step"],
                s["service"],
                s.get("actor") or "",
                s["message_id"] or "",
                s["detail"] or "",
            ]
            for s in saga["steps"]
        ]
        return "\n".join(head) + tabulate(rows, headers=["at", "step", "by", "asked by", "message id", "detail"])

    _emit(args, data, human)
    return 0


def _acted(action: str, order_id: int, done: dict[str, Any]) -> str:
    if action == "resend":
        return f"order {order_id}: its last event {done['message_id']} is published again"
    return f"order {order_id}: {done['status']}" + (
        f" ({done['rejection_reason']})" if done["rejection_reason"] else ""
    )


def _duration(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.replace(".", "", 1).isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not an age like 90s, 2m, 1h or 3d")
    return timedelta(seconds=float(number) * units[unit])


async def _sagas(args: argparse.Namespace, settings: SagactlSettings) -> int:
    statuses = [status.strip() for status in args.status.split(",") if status.strip()]
    created_before = datetime.now(UTC) - args.older_than if args.older_than else None
    async with OrderApi(settings.order_service_url, settings.token) as api:
        try:
            found = [
                order
                for status in statuses
                async for order in api.orders(
                    status=status, customer_id=args.customer, created_before=created_before, limit=args.limit
                )
            ]
            found.sort(key=lambda order: order["id"])
            if args.then and not args.json:
                verb = "would" if args.dry_run else "will"
                print(f"{len(found)} sagas found; {verb} {args.then} each", file=sys.stderr)
            outcomes = [] if args.dry_run or not args.then else [await _act_on(api, o, args.then) for o in found]
        except OrderApiError as exc:
            raise CommandError(str(exc)) from None
    data = {"sagas": found, "action": args.then, "dry_run": args.dry_run, "outcomes": outcomes}

    def human() -> str:
        now = datetime.now(UTC)
        rows = [
            [o["id"], o["status"], o["customer_id"], o["total_price"], _age(now, o["created_at"]), o["trace_id"] or ""]
            for o in found
        ]
        table = tabulate(
            rows, headers=["order", "status", "customer", "total", "age", "trace id"], disable_numparse=True
        )
        lines = [table if rows else "no saga matches", *(outcome["line"] for outcome in outcomes)]
        return "\n".join(lines)

    _emit(args, data, human)
    return EXIT_NEEDS_ATTENTION if any(not outcome["ok"] for outcome in outcomes) else 0


async def _act_on(api: OrderApi, order: dict[str, Any], action: str) -> dict[str, Any]:
    """One saga of a bulk action: its outcome, a refusal (e.g. it finished meanwhile) is reported, not fatal."""
    try:
        done = await api.act(order["id"], action)
    except OrderApiError as exc:
        return {"order_id": order["id"], "ok": False, "line": f"order {order['id']}: not done: {exc}"}
    return {"order_id": order["id"], "ok": True, "line": _acted(action, order["id"], done), "result": done}


def _age(now: datetime, created_at: str) -> str:
    seconds = int((now - datetime.fromisoformat(created_at)).total_seconds())
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


# --- why ---------------------------------------------------------------------------------------------


async def _why(args: argparse.Namespace, settings: SagactlSettings) -> int:
    where = Where(
        order_database_url=settings.order_database_url,
        customer_database_url=settings.customer_database_url,
        broker_urls=split_broker_urls(settings.rabbitmq_broker_url),
        service_urls={ORDER_SERVICE: settings.order_service_url, CUSTOMER_SERVICE: settings.customer_service_url},
        retry_delays_ms=tuple(settings.retry_delays_ms),
        deadline_s=settings.deadline_s,
    )
    facts = await collect(args.order_id, where)
    diagnosis = diagnose(facts)
    _emit(args, {"diagnosis": vars(diagnosis), "facts": facts.as_dict()}, lambda: render(facts, diagnosis))
    return 0 if diagnosis.fix is None else EXIT_NEEDS_ATTENTION


# --- dlq -------------------------------------------------------------------------------------------


def _services(args: argparse.Namespace) -> list[str]:
    return [ORDER_SERVICE, CUSTOMER_SERVICE] if args.service == "all" else [SERVICES[args.service]]


async def _open_dlq(args: argparse.Namespace, settings: SagactlSettings) -> DeadLetterQueues:
    urls = split_broker_urls(settings.rabbitmq_broker_url)
    try:
        return await DeadLetterQueues.connect(urls, _services(args))
    except ConnectionError as exc:
        shown = ", ".join(redact_url(url) for url in urls)
        raise CommandError(f"cannot reach RabbitMQ at {shown} ({exc}); set RABBITMQ_BROKER_URL") from None


def _find(letters: list[DeadLetter], key: str) -> DeadLetter:
    found = [letter for letter in letters if letter.key == key or letter.message_id == key]
    if not found:
        raise CommandError(f"no dead-lettered message {key!r}; `sagactl dlq list` shows what there is")
    return found[0]


def _dlq_filters(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--reason", help="only this category (max_attempts, ...) or reason text (a part of it)")
    sub.add_argument("--type", help="only this message type (order.created, ...)")
    sub.add_argument("--order", help="only this order's messages")
    sub.add_argument("--since", help="only those dead-lettered since: a duration (10m, 2h, 1d) or an ISO time")


def _filters_of(args: argparse.Namespace) -> Filters:
    try:
        since = parse_since(args.since, datetime.now(UTC)) if args.since else None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return Filters(reason=args.reason, type=args.type, order=args.order, since=since)


async def _dlq_list(args: argparse.Namespace, settings: SagactlSettings) -> int:
    filters = _filters_of(args)
    try:
        group_by = parse_group_by(args.group_by) if args.group_by else None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    queues = await _open_dlq(args, settings)
    try:
        letters = filters.select(await queues.read())
    finally:
        await queues.close()
    if group_by:
        groups = group_counts(letters, group_by)
        _emit(args, groups, lambda: tabulate([list(g.values()) for g in groups], headers=[*group_by, "count"]))
        return 0
    rows = [letter.summary() for letter in letters]

    def human() -> str:
        if not rows:
            return "no dead-lettered messages"
        table = [[r["service"], r["id"], r["type"], r["order_id"], r["category"], r["reason"][:80]] for r in rows]
        return tabulate(table, headers=["service", "id", "type", "order", "category", "reason"])

    _emit(args, rows, human)
    return 0


async def _dlq_show(args: argparse.Namespace, settings: SagactlSettings) -> int:
    queues = await _open_dlq(args, settings)
    try:
        letter = _find(await queues.read(), args.message)
    finally:
        await queues.close()
    details = letter.details()
    _emit(args, details, lambda: json.dumps(details, indent=2, default=str))
    return 0


async def _dlq_replay(args: argparse.Namespace, settings: SagactlSettings) -> int:
    filters = _filters_of(args)
    if not (args.message or args.all or filters.given):
        raise CommandError("name a message, --all, or a filter (--reason, --type, --order, --since)")
    if (args.max is not None and args.max < 1) or args.rate <= 0 or args.max_replays < 1:
        raise CommandError("--max, --rate and --max-replays must be positive")
    window = timedelta(seconds=inbox_window(settings.inbox_retention_s))
    now = datetime.now(UTC)
    queues = await _open_dlq(args, settings)
    try:
        letters = await queues.read()
        chosen = [_find(letters, args.message)] if args.message else filters.select(letters)
        plan = plan_replay(
            chosen, now=now, window=window, force=args.force, max_replays=args.max_replays, max_count=args.max
        )
        if not args.dry_run:
            await queues.replay_paced(plan.replay, rate=args.rate, replayed_at=now)
    finally:
        await queues.close()  # what was not replayed goes back to its dead-letter queue
    result = {
        "dry_run": args.dry_run,
        "replayed": [] if args.dry_run else [letter.summary() for letter in plan.replay],
        "would_replay": [letter.summary() for letter in plan.replay] if args.dry_run else [],
        "refused": [letter.summary() | {"why": why} for letter, why in plan.refused],
        "left": [letter.summary() for letter in plan.left],
    }

    def human() -> str:
        verb = "would replay" if args.dry_run else "replayed"
        lines = [f"{verb} {len(plan.replay)} message(s) to their service's queue"]
        lines += [f"  {verb} {letter.key} ({letter.type}, order {letter.order_id or '-'})" for letter in plan.replay]
        lines += [f"  refused {letter.key}: {why}; it stays in the dead-letter queue" for letter, why in plan.refused]
        if plan.left:
            lines.append(f"  {len(plan.left)} more matched and stay for the next run (--max {args.max})")
        return "\n".join(lines)

    _emit(args, result, human)
    return EXIT_NEEDS_ATTENTION if plan.refused else 0


async def _dlq_purge(args: argparse.Namespace, settings: SagactlSettings) -> int:
    queues = await _open_dlq(args, settings)
    try:
        counts = await queues.depths()
        if not sum(counts.values()):
            _emit(args, {"purged": counts}, lambda: "nothing to purge")
            return 0
        if not args.yes:
            listed = ", ".join(f"{n} from {service}" for service, n in counts.items() if n)
            if not sys.stdin.isatty():
                raise CommandError(f"refusing to purge {listed} without a terminal to confirm; add --yes")
            prompt = f"Delete {listed} for good? Type 'purge' to confirm: "
            if (await asyncio.to_thread(input, prompt)).strip() != "purge":
                print("nothing purged")
                return EXIT_ERROR
        purged = {service: await queues.purge(service) for service in queues.services}
    finally:
        await queues.close()
    _emit(args, {"purged": purged}, lambda: "purged " + ", ".join(f"{n} from {s}" for s, n in purged.items()))
    return 0


# --- reconcile and prune ---------------------------------------------------------------------------


async def _reconcile(args: argparse.Namespace, settings: SagactlSettings) -> int:
    try:
        report = await reconcile(
            settings.order_database_url,
            settings.customer_database_url,
            grace_s=settings.reconcile_grace_s,
            deadline_s=settings.deadline_s,
            dry_run=args.dry_run,
        )
    except DatabaseUnreachable as exc:
        raise CommandError(
            f"cannot reach the database at {exc}; set ORDER_DATABASE_URL and CUSTOMER_DATABASE_URL"
        ) from None
    data = report.as_dict()

    def human() -> str:
        checked = ", ".join(f"{n} {what}" for what, n in report.checked.items())
        lines = [f"checked: {checked}"]
        if report.consistent:
            lines.append("consistent: nothing to do")
        verb = "would repair" if report.dry_run else "repaired"
        lines += [f"{verb}: order {f.order_id}: {f.problem} -> {f.action}" for f in report.repaired]
        lines += [f"needs attention: order {f.order_id}: {f.problem} -> {f.action}" for f in report.needs_attention]
        return "\n".join(lines)

    _emit(args, data, human)
    return EXIT_NEEDS_ATTENTION if report.needs_attention else 0


async def _prune(args: argparse.Namespace, settings: SagactlSettings) -> int:
    results = {}
    for service, url in (
        (ORDER_SERVICE, settings.order_database_url),
        (CUSTOMER_SERVICE, settings.customer_database_url),
    ):
        try:
            conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
            try:
                result = await prune(
                    conn,
                    outbox_retention_s=settings.outbox_retention_s,
                    inbox_retention_s=settings.inbox_retention_s,
                    history_retention_s=settings.history_retention_s,
                    dry_run=args.dry_run,
                )
            finally:
                await conn.close()
        except DATABASE_ERRORS as exc:
            raise CommandError(f"cannot reach the {service} database at {redact_url(url)} ({exc})") from None
        results[service] = {
            "outbox_rows": result.outbox_rows,
            "inbox_rows": result.inbox_rows,
            "inbox_window_s": result.inbox_window_s,
            "history_rows": result.history_rows,
        }
    verb = "would delete" if args.dry_run else "deleted"

    def human() -> str:
        return "\n".join(
            f"{service}: {verb} {r['outbox_rows']} sent outbox rows, {r['inbox_rows']} inbox records "
            f"(inbox window {r['inbox_window_s'] / 86400:g} days) and {r['history_rows']} saga history rows "
            f"(sagas over for {settings.history_retention_s / 86400:g} days)"
            for service, r in results.items()
        )

    _emit(args, {"dry_run": args.dry_run, "databases": results}, human)
    return 0


if __name__ == "__main__":
    main()
