"""One INSERT statement for many new rows of a model, cheaper in Python than bulk_create on
PostgreSQL, for the hot paths that write a row per event (webhook events, delivery history).

bulk_create on PostgreSQL sends one array per column (UNNEST) through Django's client-side
cursor: psycopg dumps arrays element by element in Python, then quotes the result into the
SQL, also in Python. `insert` sends the rows as one JSON parameter instead, encoded by
json.dumps in C and turned back into rows by `json_to_recordset`, on a server-side binding
cursor. The statement's text does not depend on how many rows there are, so psycopg converts
it once and PostgreSQL prepares it once. Other databases take the ORM's own INSERT.

Like bulk_create: no signals, no save(), the rows' returned fields (their ids) set on the
instances. Unlike it: one statement whatever the count, and no transaction of its own (in
autocommit the statement commits alone: one round trip).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any, TypeVar

import psycopg
from django.db import connections, models, router

M = TypeVar("M", bound=models.Model)


@functools.cache
def _fields(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    """Every concrete column an INSERT writes: all but the auto id and generated fields."""
    fields = [
        f
        for f in model._meta.concrete_fields
        if not getattr(f, "generated", False) and not isinstance(f, models.AutoField)
    ]
    if any(f.has_db_default() for f in fields):
        raise TypeError(f"{model.__name__} has a db_default field: insert it with bulk_create")
    return fields


@functools.cache
def _sql(model: type[models.Model], alias: str) -> str:
    db: Any = connections[alias]
    quote, fields = db.ops.quote_name, _fields(model)
    columns = ", ".join(quote(f.column) for f in fields)
    types = ", ".join(f"{quote(f.column)} {f.db_type(db)}" for f in fields)  # over-long: an error
    returning = ", ".join(quote(f.column) for f in model._meta.db_returning_fields)
    return (
        f"INSERT INTO {quote(model._meta.db_table)} ({columns}) "
        f"SELECT {columns} FROM json_to_recordset(%s::json) AS r({types}) RETURNING {returning}"
    )


def insert(objs: Sequence[M]) -> None:
    """INSERT the new instances OBJS (one model) in one statement, in the current transaction
    or autocommit, and set the fields the database returns (the ids) on them."""
    if not objs:
        return
    model = type(objs[0])
    alias = router.db_for_write(model)
    db: Any = connections[alias]
    fields, opts = _fields(model), model._meta
    if db.vendor == "postgresql":
        # Values as Django prepares them for their column; UUIDs and datetimes go as text,
        # which PostgreSQL casts back exactly.
        rows = [{f.column: f.get_db_prep_save(f.pre_save(obj, True), db) for f in fields} for obj in objs]
        payload = json.dumps(rows, ensure_ascii=False, default=str, check_circular=False)
        db.ensure_connection()
        with db.wrap_database_errors:
            cursor = db._prepare_cursor(psycopg.Cursor(db.connection))  # Django's wrapper: query logging
        with cursor:
            cursor.execute(_sql(model, alias), [payload])
            returned = cursor.fetchall()
    else:
        returned = model._base_manager._insert(  # type: ignore[attr-defined]
            objs, fields=fields, returning_fields=opts.db_returning_fields, using=alias
        )
    for obj, values in zip(objs, returned, strict=True):
        for value, field in zip(values, opts.db_returning_fields, strict=True):
            setattr(obj, field.attname, value)
        obj._state.adding = False
        obj._state.db = alias
