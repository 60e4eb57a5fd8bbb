"""The audience snapshot renders messages in SQL exactly as `render_text` does in Python, on
PostgreSQL (this suite's database) and on SQLite (the embedded default, in a subprocess)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from campaigns import snapshot
from campaigns.models import Campaign, Connection, Contact, Delivery
from campaigns.snapshot import render_text
from sense.models import Tenant
from tests.helpers import clean_env, manage

TEMPLATES = [
    "Oi {{ name }}, de {{city}}{{nope}}!",
    "{{name}}{{name}} {{ phone }} {{name}}",
    "100% {{pct}}% 'single' \"double\" %s %(city)s %% \\n C:\\path {{city}}",
    "{{n}}|{{f}}|{{f2}}|{{b}}|{{t}}|{{big}}|{{neg}}|{{list}}|{{obj}}|{{null}}|{{u}}|{{empty}}",
    "{{1}} {{a.b}} {{a-b}} {{ç}} {{city.x}}",
    "no placeholders at all: { {name} } {{ }} {{name} {name}}",
    "{{name}}",
    "{{city}}",
    "{{n}}",
    "{{f}}",
    "🎉 {{u}} 🎉",
]

ATTRIBUTES: list[dict[str, Any]] = [
    {
        "city": "Recife",
        "n": 5,
        "f": 1.5,
        "f2": 0.30000000000000004,
        "b": True,
        "t": False,
        "big": 12345678901234567890123,
        "neg": -7,
        "list": [1, "a", None],
        "obj": {"k": "v", "n": [1, {"b": None}]},
        "null": None,
        "1": "one",
        "a.b": "dotted",
        "a-b": "hyphen",
        "ç": "cedilha",
        "u": "emoji 🎉 'q' \"dq\" 100% \\ back",
        "pct": "50",
        "empty": "",
    },
    {},
    {"city": "", "n": 0, "f": 1e20, "f2": 100.0, "b": False, "big": 9223372036854775808, "neg": -0.0},
    {"city": "São Paulo", "n": -12345678901234567890, "f": 1e-7, "list": [], "obj": {}, "city.x": "nested?"},
    {"n": "5", "b": "True", "f": "1.5", "null": "None"},
]
NAMES = ["Maria", 'O\'Brien 100% "x"', "", "Zoë {{name}}", "Ana"]


def mismatches() -> list[dict[str, str]]:
    """Snapshot every template for contacts with tricky attributes in the configured database;
    the deliveries whose text differs from what render_text makes of the stored contact."""
    tenant = Tenant.objects.create(slug="render", name="Render")
    connection = Connection.objects.create(tenant=tenant, name="c", provider="evolution", base_url="http://127.0.0.1:9")
    contacts = Contact.objects.bulk_create(
        [
            Contact(tenant=tenant, phone=f"+551199900{i:04d}", name=NAMES[i % len(NAMES)], attributes=attributes)
            for i, attributes in enumerate(ATTRIBUTES)
        ]
    )
    # As read back: PostgreSQL's jsonb keeps numbers as numerics (1e20 comes back as an int).
    contacts = list(Contact.objects.filter(pk__in=[c.pk for c in contacts]))
    found = []
    for template in TEMPLATES:
        campaign = Campaign.objects.create(tenant=tenant, name="r", connection=connection, message=template)
        created = snapshot.insert_deliveries(campaign, after=0, upto=max(c.pk for c in contacts))
        assert created == len(contacts)
        for contact in contacts:
            text = Delivery.objects.get(campaign=campaign, contact=contact).text
            expected = render_text(template, name=contact.name, phone=contact.phone, attributes=contact.attributes)
            if text != expected:
                found.append({"template": template, "sql": text, "python": expected})
    return found


@pytest.mark.django_db
def test_sql_renders_every_template_like_python_on_postgresql() -> None:
    assert mismatches() == []


def test_sql_renders_every_template_like_python_on_sqlite(tmp_path: Path) -> None:
    env = clean_env(DEBUG="true", SENSE_VAR_DIR=str(tmp_path))
    assert manage("migrate", "--noinput", "-v", "0", env=env).returncode == 0
    script = "import json; from tests.campaigns.test_message_sql import mismatches; print(json.dumps(mismatches()))"
    done = manage("shell", "-c", script, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.django_db
def test_only_values_sql_cannot_spell_are_rendered_in_python(acme: Tenant, monkeypatch: Any) -> None:
    connection = Connection.objects.create(tenant=acme, name="c", provider="evolution", base_url="http://127.0.0.1:9")
    Contact.objects.create(tenant=acme, phone="+5511999000001", name="a", attributes={"v": "text", "n": 3})
    Contact.objects.create(tenant=acme, phone="+5511999000002", name="b", attributes={"v": 2.5})
    Contact.objects.create(tenant=acme, phone="+5511999000003", name="c", attributes={"v": [1]})
    rendered: list[str] = []
    original = snapshot._render_in_python

    def spy(campaign: Campaign, contacts: Any, **kwargs: Any) -> None:
        rendered.extend(contacts.values_list("name", flat=True))
        original(campaign, contacts, **kwargs)

    monkeypatch.setattr(snapshot, "_render_in_python", spy)
    campaign = Campaign.objects.create(tenant=acme, name="r", connection=connection, message="{{v}}/{{n}}")
    assert snapshot.insert_deliveries(campaign, after=0, upto=10**12) == 3
    assert sorted(rendered) == ["b", "c"]
    assert sorted(Delivery.objects.filter(campaign=campaign).values_list("text", flat=True)) == [
        "2.5/",
        "[1]/",
        "text/3",
    ]
