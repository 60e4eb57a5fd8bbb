"""Drop three foreign-key indexes that a composite index already starts with: each cost an
index entry on every webhook event, delivery history row and delivery status change.

Only the indexes go (a short lock each); the FK constraints stay as they are, where
AlterField(db_index=False) would drop and re-add them, checking every row again."""

import django.db.models.deletion
from django.db import migrations, models

# (table, column, the index Django named for the FK)
REDUNDANT = [
    ("campaigns_delivery", "campaign_id", "campaigns_delivery_campaign_id_87e5668a"),
    ("campaigns_deliveryevent", "delivery_id", "campaigns_deliveryevent_delivery_id_e25af7ba"),
    ("campaigns_webhookevent", "tenant_id", "campaigns_webhookevent_tenant_id_af5e9551"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0014_engine"),
        ("sense", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{index}"',
                    reverse_sql=f'CREATE INDEX "{index}" ON "{table}" ("{column}")',
                )
                for table, column, index in REDUNDANT
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="delivery",
                    name="campaign",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="deliveries",
                        to="campaigns.campaign",
                    ),
                ),
                migrations.AlterField(
                    model_name="deliveryevent",
                    name="delivery",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="campaigns.delivery",
                    ),
                ),
                migrations.AlterField(
                    model_name="webhookevent",
                    name="tenant",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="sense.tenant",
                        verbose_name="tenant",
                    ),
                ),
            ],
        ),
    ]
