"""/readyz's schema check: a release waits for its own migrations, never for a newer release's."""

from order_service.cli import MIGRATIONS
from saga_common.persistence.migrations import SchemaHistory


def test_the_history_is_read_from_the_migrations_the_release_ships():
    history = SchemaHistory.of(MIGRATIONS)
    assert history.head in history.known and len(history.known) >= 2


def test_a_database_at_the_head_or_ahead_of_it_is_ready():
    history = SchemaHistory(head="0002", known=frozenset({"0001", "0002"}))
    assert history.problem("0002") is None
    assert history.problem("0003_from_the_next_release") is None


def test_an_older_or_missing_schema_names_what_the_release_waits_for():
    history = SchemaHistory(head="0002", known=frozenset({"0001", "0002"}))
    assert "at revision 0001, this release needs 0002" in (history.problem("0001") or "")
    assert "no schema yet" in (history.problem(None) or "")
