"""The audience snapshot in SQL: one pending delivery per sendable contact of a campaign's
audience, created by the database (`INSERT INTO campaigns_delivery ... SELECT ... FROM
campaigns_contact`), one chunk of contact ids at a time, with each message rendered in SQL.

`render_text` is the rule; `message_sql` is the same rule as an SQL expression (PostgreSQL
and SQLite), exact for names, phones and attribute values that are strings, integers,
booleans, null or missing. What SQL cannot reproduce exactly (Python's `str()` of floats,
lists and objects) is found by `unrendered_attributes` and rendered by `render_text` for
those rows only, in the same transaction. `campaigns.services.campaign_prepare` drives it.

A template campaign goes the same way: its text is the template's body with each parameter
replaced by the Sense text mapped to it (`template_sources`), and each delivery's
`template_values` (parameter -> rendered text, what the sender puts in the template's
components) is a JSON object built by the same SQL expressions.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import connections
from django.db.models import (
    BooleanField,
    Case,
    DateTimeField,
    Expression,
    F,
    Field,
    Func,
    IntegerField,
    Max,
    TextField,
    UUIDField,
    Value,
    When,
)
from django.db.models.functions import JSONObject, Mod
from django.db.models.lookups import Exact
from django.utils import timezone

from campaigns.models import TEMPLATE_PLACEHOLDER, Campaign, Contact, ContactQuerySet, Delivery, MessageTemplate

PLACEHOLDER = re.compile(r"\{\{\s*([\w.\-]+)\s*\}\}")
CONTACT_FIELDS = ("name", "phone")


def render_text(template: str, *, name: str, phone: str, attributes: dict[str, Any]) -> str:
    """TEMPLATE with {{name}}, {{phone}} and {{<attribute>}} filled in; unknown ones render empty."""

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "name":
            return name
        if key == "phone":
            return phone
        found = attributes.get(key)
        return "" if found is None else str(found)

    return PLACEHOLDER.sub(value, template)


def template_sources(template: MessageTemplate, params: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A template campaign's text and parameters as Sense messages: the body with each of its
    parameters replaced by the text PARAMS maps it to (so `render_text` of it is the body the
    contact reads), and each parameter key -> its mapped text."""

    def mapped(match: re.Match[str]) -> str:
        return params.get(match.group(1), "")

    sources = {key: params.get(key, "") for key in template.parameters}
    return TEMPLATE_PLACEHOLDER.sub(mapped, template.body_text), sources


def render_template_values(
    sources: dict[str, str], *, name: str, phone: str, attributes: dict[str, Any]
) -> dict[str, str]:
    """Each parameter of SOURCES rendered for one contact (see render_text)."""
    return {key: render_text(text, name=name, phone=phone, attributes=attributes) for key, text in sources.items()}


def attribute_keys(template: str) -> list[str]:
    """The attribute keys TEMPLATE's placeholders name (not name or phone), each once."""
    return list(dict.fromkeys(k for k in PLACEHOLDER.findall(template) if k not in CONTACT_FIELDS))


class _AttributeSQL(Func):
    """SQL about one key of the contact's `attributes`. Not KeyTextTransform: that one reads
    a key made of digits ("{{1}}") as an array index, while `render_text` reads it as a key."""

    def __init__(self, *keys: str, output_field: Any) -> None:
        super().__init__(F("attributes"), output_field=output_field)
        self.keys = keys

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> Any:  # type: ignore[override]
        raise NotImplementedError(f"the audience snapshot supports PostgreSQL and SQLite, not {connection.vendor}")

    def _column(self, compiler: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.source_expressions[0])
        return sql, list(params)


class AttributeText(_AttributeSQL):
    """`str(attributes[key])` for strings, integers and booleans; '' when missing or null.
    Other values (floats, lists, objects) come out in the database's JSON spelling, which
    `unrendered_attributes` finds so that they are rendered in Python."""

    def __init__(self, key: str) -> None:
        super().__init__(key, output_field=TextField())

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, tuple[Any, ...]]:
        column, p = self._column(compiler)
        key = self.keys[0]
        sql = (
            f"(CASE jsonb_typeof({column} -> %s) WHEN 'boolean' THEN "
            f"(CASE {column} ->> %s WHEN 'true' THEN 'True' ELSE 'False' END) "
            f"ELSE COALESCE({column} ->> %s, '') END)"
        )
        return sql, (*p, key, *p, key, *p, key)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, tuple[Any, ...]]:
        column, p = self._column(compiler)
        path = _sqlite_path(self.keys[0])
        sql = (
            f"(CASE json_type({column}, %s) WHEN 'true' THEN 'True' WHEN 'false' THEN 'False' "
            f"ELSE COALESCE(CAST(json_extract({column}, %s) AS TEXT), '') END)"
        )
        return sql, (*p, path, *p, path)


class UnrenderedAttributes(_AttributeSQL):
    """True for a contact whose value of any of KEYS is one AttributeText does not render
    like `str()`: a non-integer number, a list or an object. On SQLite also an integer too
    large for 64 bits (it reads it as a float), and any value of a non-ASCII key: Django
    stores such keys escaped (\\uXXXX) and SQLite's JSON paths do not match them."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(*keys, output_field=BooleanField())

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, tuple[Any, ...]]:
        column, p = self._column(compiler)
        one = (
            f"(jsonb_typeof({column} -> %s) IN ('array', 'object') OR "
            f"(jsonb_typeof({column} -> %s) = 'number' AND NOT ({column} ->> %s) ~ %s))"
        )
        params: list[Any] = []
        for key in self.keys:
            params += [*p, key, *p, key, *p, key, r"^-?[0-9]+$"]
        return "(" + " OR ".join([one] * len(self.keys)) + ")", tuple(params)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, tuple[Any, ...]]:
        column, p = self._column(compiler)
        one = f"(json_type({column}, %s) IN ('array', 'object') OR typeof(json_extract({column}, %s)) = 'real')"
        conditions, params = [], []
        for key in self.keys:
            if key.isascii():
                conditions.append(one)
                params += [*p, _sqlite_path(key), *p, _sqlite_path(key)]
            else:
                conditions.append("1")
        return "(" + " OR ".join(conditions) + ")", tuple(params)


def _sqlite_path(key: str) -> str:
    # A quoted label: dots and hyphens in a key are part of it, not path syntax. PLACEHOLDER
    # keys hold no quote or backslash.
    return f'$."{key}"'


def message_sql(template: str) -> Expression | F:
    """TEMPLATE rendered for each contact row, as one SQL expression (see render_text)."""
    parts: list[Expression | F] = []
    for index, part in enumerate(PLACEHOLDER.split(template)):
        if index % 2 == 0:
            if part:
                parts.append(Value(part, output_field=TextField()))
        elif part in CONTACT_FIELDS:
            parts.append(F(part))
        else:
            parts.append(AttributeText(part))
    if not parts:
        return Value("", output_field=TextField())
    if len(parts) == 1:
        return parts[0]
    # Every part is NOT NULL (attributes are coalesced to ''), so `||` needs no COALESCE.
    return Func(*parts, template="(%(expressions)s)", arg_joiner=" || ", output_field=TextField())


def variant_of(contact_id: int, count: int) -> int:
    """The variant a contact's delivery carries: the texts are used in turn, by contact id."""
    return contact_id % count if count > 1 else 0


def variant_sql(count: int) -> Expression:
    """`variant_of` as SQL, for each contact row."""
    if count <= 1:
        return Value(0, output_field=IntegerField())
    return Mod(F("pk"), Value(count), output_field=IntegerField())


def texts_sql(texts: list[str]) -> Expression | F:
    """The text of each contact row's variant (`variant_of`), rendered like `message_sql`."""
    if len(texts) <= 1:
        return message_sql(texts[0])
    variant = variant_sql(len(texts))
    whens = [When(Exact(variant, Value(i)), then=message_sql(text)) for i, text in enumerate(texts)]
    return Case(*whens, default=message_sql(texts[0]), output_field=TextField())


def audience(campaign: Campaign) -> ContactQuerySet:
    """CAMPAIGN's sendable contacts: its tenant's, with any of its tags, not opted out."""
    contacts: ContactQuerySet = Contact.objects.for_tenant(campaign.tenant_id)
    return contacts.with_any_tag(campaign.tags).sendable().order_by()


def next_bound(campaign: Campaign, *, after: int, size: int) -> int | None:
    """The id of the SIZE-th contact of CAMPAIGN's tenant after id AFTER (or of its last one
    when fewer are left): the next chunk is the audience's contacts with AFTER < id <= that.
    None when none is left. Read off the (tenant, id) index alone, whatever the filters."""
    rest = Contact.objects.filter(tenant_id=campaign.tenant_id, pk__gt=after)
    bound = rest.order_by("pk").values_list("pk", flat=True)[size - 1 : size].first()
    if bound is None:
        bound = rest.aggregate(last=Max("pk"))["last"]
    return bound


def insert_deliveries(campaign: Campaign, *, after: int, upto: int) -> int:
    """Create the pending deliveries of CAMPAIGN's audience contacts with AFTER < id <= UPTO
    in one INSERT ... SELECT (once per contact: ON CONFLICT DO NOTHING on the campaign and
    contact), then render in Python the few texts SQL cannot. Returns how many it created.
    Run it inside the transaction that counts them. The texts (the main message and its
    variants, used in turn: `variant_of`) are rendered by the database; a template
    campaign has one text, its body, and its parameters rendered the same way."""
    contacts = audience(campaign).filter(pk__gt=after, pk__lte=upto)
    now = timezone.now()
    texts, sources = campaign.texts, None
    if campaign.template is not None:
        message, sources = template_sources(campaign.template, campaign.template_params or {})
        texts = [message]
    values: dict[str, Expression | F] = {  # delivery field -> its value for each contact row
        "tenant": F("tenant_id"),
        "campaign": Value(campaign.pk, output_field=UUIDField()),
        "contact": F("pk"),
        "phone": F("phone"),
        "text": texts_sql(texts),
        "variant": variant_sql(len(texts)),
        "status": Value(Delivery.Status.PENDING, output_field=TextField()),
        "attempts": Value(0),
        "error_code": Value("", output_field=TextField()),
        "error_message": Value("", output_field=TextField()),
        "created_at": Value(now, output_field=DateTimeField()),
        "updated_at": Value(now, output_field=DateTimeField()),
    }
    if sources is not None:
        # {"1": <rendered>, "header.1": ...} built by the database, like the text.
        values["template_values"] = JSONObject(**{key: message_sql(text) for key, text in sources.items()})
    aliases = {f"snapshot_{name}": expression for name, expression in values.items()}
    select = contacts.annotate(**aliases).values(*aliases)
    connection = connections[select.db]
    select_sql, params = select.query.get_compiler(connection=connection).as_sql()
    quote = connection.ops.quote_name
    meta = Delivery._meta
    columns = ", ".join(quote(_column(name)) for name in values)
    unique = ", ".join(quote(_column(name)) for name in ("campaign", "contact"))
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) {select_sql} ON CONFLICT ({unique}) DO NOTHING"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        created = cursor.rowcount
    keys = attribute_keys("\n".join([*texts, *(sources or {}).values()]))
    if keys and created:
        _render_in_python(campaign, contacts.filter(UnrenderedAttributes(keys)), texts=texts, sources=sources)
    return created


def _column(name: str) -> str:
    field = Delivery._meta.get_field(name)
    assert isinstance(field, Field) and field.column, name
    return field.column


def _render_in_python(
    campaign: Campaign,
    contacts: ContactQuerySet,
    *,
    texts: list[str] | None = None,
    sources: dict[str, str] | None = None,
) -> None:
    """Give the deliveries of CONTACTS (of this chunk) the text of their variant among TEXTS
    (default: the campaign's) and the template parameters of SOURCES that `render_text` makes."""
    texts = texts or campaign.texts
    rows = {
        pk: (name, phone, attributes or {})
        for pk, name, phone, attributes in contacts.values_list("pk", "name", "phone", "attributes")
    }
    if not rows:
        return
    deliveries = list(Delivery.objects.filter(campaign=campaign, contact_id__in=list(rows)).only("pk", "contact_id"))
    for delivery in deliveries:
        name, phone, attributes = rows[delivery.contact_id]  # type: ignore[index]
        text = texts[variant_of(delivery.contact_id, len(texts))]  # type: ignore[arg-type]
        delivery.text = render_text(text, name=name, phone=phone, attributes=attributes)
        if sources is not None:
            delivery.template_values = render_template_values(sources, name=name, phone=phone, attributes=attributes)
    Delivery.objects.bulk_update(
        deliveries, ["text", "template_values"] if sources is not None else ["text"], batch_size=500
    )
