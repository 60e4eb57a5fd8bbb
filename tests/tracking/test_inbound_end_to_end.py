"""Over real HTTP with a real Dramatiq worker: the simulator posts inbound messages to a live
server; the worker stores them, fetches their attachments from the simulator into the media
library and sends the opt-out confirmation back through the receiving connection."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest

from campaigns.models import ConsentEvent, ConsentSettings, Contact, Delivery, InboundMessage
from tests.helpers import wait_for
from tests.simulator import ProviderSimulator
from tests.tracking.conftest import APP_SECRET, make_campaign, make_connection, make_deliveries, stats
from tests.webhook_payloads import (
    PNG_1PX,
    cloud_inbound,
    cloud_message,
    evolution_image,
    evolution_message_item,
    evolution_upsert,
)

pytestmark = pytest.mark.slow


def test_replies_attachments_and_an_opt_out_flow_end_to_end(
    dramatiq_worker: dramatiq.Worker, live_server: Any, acme: Any, settings: Any
) -> None:
    settings.MEDIA_PROXY_TRUSTED_HOSTS = ["127.0.0.1"]
    with ProviderSimulator() as sim:
        evolution = make_connection(acme, "evolution")
        cloud = make_connection(acme, "cloud")
        cloud.base_url = sim.base_url
        cloud.save(update_fields=["base_url"])
        ConsentSettings.objects.create(tenant=acme, opt_out_reply="Você não receberá mais mensagens.")
        maria = Contact.objects.create(tenant=acme, phone="+5511999990000", name="Maria")
        campaign = make_campaign(cloud)
        [delivery] = make_deliveries(campaign, 1)
        Delivery.objects.filter(pk=delivery.pk).update(contact=maria, phone=maria.phone)

        evolution_url = f"{live_server.url}/api/webhooks/evolution/{evolution.webhook_token}/"
        cloud_url = f"{live_server.url}/api/webhooks/whatsapp/{cloud.webhook_token}/"
        on_s3 = sim.add_media(PNG_1PX, "image/png")
        by_id = sim.add_media(PNG_1PX, "image/png", token="cloud-token")
        image = evolution_message_item(
            evolution_image(media_url=sim.media_url(on_s3)),
            message_id="3EB0E2E",
            remote_jid="5511977770000@s.whatsapp.net",
        )
        cloud_image = cloud_message({"image": {"id": by_id, "mime_type": "image/png"}}, message_id="wamid.IMG")
        stop = cloud_message(
            {"text": {"body": "SAIR"}}, message_id="wamid.STOP", context_id=str(delivery.provider_message_id)
        )

        assert sim.post_webhook(evolution_url, evolution_upsert(image)) == 200
        assert sim.post_webhook(evolution_url, evolution_upsert(image)) == 200  # twice
        assert sim.post_webhook(cloud_url, cloud_inbound(cloud_image), app_secret=APP_SECRET) == 200
        assert sim.post_webhook(cloud_url, cloud_inbound(stop), app_secret=APP_SECRET) == 200

        wait_for(
            lambda: InboundMessage.objects.filter(media_status="stored").count() == 2,
            timeout=30,
            what="both attachments stored",
        )
        wait_for(lambda: len(sim.sends) == 1, timeout=30, what="the confirmation sent")

    assert InboundMessage.objects.count() == 3
    assert {m.media.origin for m in InboundMessage.objects.exclude(media=None)} == {"inbound"}  # type: ignore[union-attr]
    assert (sim.sends[0]["number"], sim.sends[0]["text"]) == ("5511999990000", "Você não receberá mais mensagens.")
    maria.refresh_from_db()
    assert maria.opted_out and ConsentEvent.objects.get().confirmation == "sent"
    assert stats(campaign)["replied"] == 1
    assert Contact.objects.get(phone="+5511977770000").source == "inbound"
