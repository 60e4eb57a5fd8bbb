"""The tables every webhook writes carry no index that another one already starts with:
each index costs an entry on every insert and on every status change (which rewrites all
of a row's index entries); and dropping the redundant ones kept the foreign keys."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

# Written per event. (campaigns_campaign is written once per batch, its counters not indexed.)
HOT_TABLES = ["campaigns_webhookevent", "campaigns_delivery", "campaigns_deliveryevent"]


def _indexes(table: str) -> dict[str, tuple[list[str], bool, bool]]:
    """name -> (columns in order, unique, partial) for TABLE's indexes on PostgreSQL."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT i.relname, array_agg(a.attname ORDER BY k.ord), x.indisunique, x.indpred IS NOT NULL
            FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_class t ON t.oid = x.indrelid
            CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
            WHERE t.relname = %s
            GROUP BY i.relname, x.indisunique, x.indpred
            """,
            [table],
        )
        return {name: (list(columns), unique, partial) for name, columns, unique, partial in cursor.fetchall()}


@pytest.mark.django_db
@pytest.mark.parametrize("table", HOT_TABLES)
def test_no_index_of_a_hot_table_is_the_leading_part_of_another(table: str) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("reads PostgreSQL's catalog")
    indexes = _indexes(table)
    redundant = [
        (name, other)
        for name, (columns, unique, _) in indexes.items()
        for other, (longer, _, partial) in indexes.items()
        if other != name
        and not unique
        and not partial
        and len(longer) > len(columns)
        and longer[: len(columns)] == columns
    ]
    assert redundant == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("table", "column", "target"),
    [
        ("campaigns_delivery", "campaign_id", "campaigns_campaign"),
        ("campaigns_deliveryevent", "delivery_id", "campaigns_delivery"),
        ("campaigns_webhookevent", "tenant_id", "sense_tenant"),
    ],
)
def test_the_foreign_keys_whose_own_index_went_are_still_enforced(table: str, column: str, target: str) -> None:
    with connection.cursor() as cursor:
        constraints: dict[str, Any] = connection.introspection.get_constraints(cursor, table)
    keys = [c["foreign_key"] for c in constraints.values() if c["foreign_key"] and c["columns"] == [column]]
    assert keys and keys[0][0] == target
    covering = [c["columns"] for c in constraints.values() if c["index"] and c["columns"][:1] == [column]]
    assert covering and all(len(columns) > 1 for columns in covering)  # reached through a composite index
