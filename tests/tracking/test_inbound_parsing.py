"""Reading inbound messages out of Evolution's and the Cloud API's webhook bodies (no database)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from campaigns.providers import CloudApiProvider, EvolutionProvider
from campaigns.providers.base import InboundUpdate, ParsedWebhook
from tests.webhook_payloads import (
    PNG_1PX,
    cloud_inbound,
    cloud_message,
    cloud_user_preferences,
    evolution_audio,
    evolution_buttons_reply,
    evolution_image,
    evolution_list_reply,
    evolution_message_item,
    evolution_upsert,
)


def evolution(payload: dict[str, Any]) -> ParsedWebhook:
    return EvolutionProvider.parse_webhook(json.dumps(payload))


def cloud(payload: dict[str, Any]) -> ParsedWebhook:
    return CloudApiProvider.parse_webhook(json.dumps(payload))


def one(parsed: ParsedWebhook) -> InboundUpdate:
    [message] = parsed.messages
    return message


class TestEvolution:
    def test_a_text_message(self) -> None:
        item = evolution_message_item({"conversation": "Oi!"}, message_id="3EB0AAA", timestamp=1_764_000_000)
        message = one(evolution(evolution_upsert(item)))

        assert message.message_id == "3EB0AAA"
        assert (message.phone, message.profile_name, message.type, message.text) == (
            "+5511999990000",
            "Maria",
            "text",
            "Oi!",
        )
        assert int(message.occurred_at.timestamp()) == 1_764_000_000  # type: ignore[union-attr]
        assert message.media is None and message.quoted_id == ""

    def test_a_reply_quotes_its_message_inside_the_part(self) -> None:
        part = {"extendedTextMessage": {"text": "Sim", "contextInfo": {"stanzaId": "BAE5OURS", "participant": "x"}}}
        message = one(evolution(evolution_upsert(evolution_message_item(part))))

        assert (message.text, message.quoted_id) == ("Sim", "BAE5OURS")

    def test_a_reply_quotes_its_message_at_the_top_level_in_2_3(self) -> None:
        item = evolution_message_item({"conversation": "Sim"}, context={"stanzaId": "BAE5OURS", "quotedMessage": {}})
        assert one(evolution(evolution_upsert(item))).quoted_id == "BAE5OURS"

    @pytest.mark.parametrize(
        ("key_extra", "extra"),
        [
            ({"senderPn": "5511977770000@s.whatsapp.net"}, {}),
            ({"remoteJidAlt": "5511977770000@s.whatsapp.net", "addressingMode": "lid"}, {}),
            ({}, {"senderPn": "5511977770000@s.whatsapp.net"}),
        ],
        ids=["key.senderPn", "key.remoteJidAlt", "data.senderPn"],
    )
    def test_an_lid_sender_gets_its_phone_from_beside_it(
        self, key_extra: dict[str, Any], extra: dict[str, Any]
    ) -> None:
        item = evolution_message_item(
            {"conversation": "Oi"}, remote_jid="123456789012345@lid", key_extra=key_extra, extra=extra
        )
        message = one(evolution(evolution_upsert(item)))

        assert message.phone == "+5511977770000"
        assert message.wa_user_id == "123456789012345@lid"

    def test_a_brazilian_id_without_the_ninth_digit_gets_it(self) -> None:
        item = evolution_message_item({"conversation": "Oi"}, remote_jid="551188887777@s.whatsapp.net")
        assert one(evolution(evolution_upsert(item))).phone == "+5511988887777"

    def test_an_lid_sender_without_its_phone_is_kept_without_one(self) -> None:
        item = evolution_message_item({"conversation": "Oi"}, remote_jid="123456789012345@lid")
        message = one(evolution(evolution_upsert(item)))

        assert (message.phone, message.wa_user_id) == ("", "123456789012345@lid")

    def test_data_may_be_an_array(self) -> None:
        items = [
            evolution_message_item({"conversation": "um"}, message_id="A1"),
            evolution_message_item(
                {"conversation": "dois"}, message_id="A2", remote_jid="5511977770000@s.whatsapp.net"
            ),
        ]
        parsed = evolution(evolution_upsert(*items))

        assert [(m.message_id, m.text, m.phone) for m in parsed.messages] == [
            ("A1", "um", "+5511999990000"),
            ("A2", "dois", "+5511977770000"),
        ]

    @pytest.mark.parametrize(
        "remote_jid", ["120363025246125888@g.us", "status@broadcast", "1203630252@broadcast", "1203@newsletter"]
    )
    def test_groups_and_broadcasts_are_not_conversations(self, remote_jid: str) -> None:
        item = evolution_message_item({"conversation": "Oi grupo"}, remote_jid=remote_jid)
        parsed = evolution(evolution_upsert(item))

        assert parsed.messages == [] and not parsed.actionable

    def test_our_own_echo_is_never_inbound(self) -> None:
        parsed = evolution(evolution_upsert(evolution_message_item({"conversation": "Hello"}, from_me=True)))
        assert parsed.messages == [] and not parsed.actionable

    def test_an_image_with_its_base64(self) -> None:
        message = one(evolution(evolution_upsert(evolution_message_item(evolution_image(base64=PNG_1PX)))))

        assert (message.type, message.text) == ("image", "Olha isso")
        assert message.media is not None
        assert message.media.in_body and message.media.url == "" and message.media.mime_type == "image/jpeg"
        assert "base64" not in json.dumps(message.media.as_info())  # never the bytes

    def test_an_image_with_its_media_url(self) -> None:
        part = evolution_image(media_url="https://s3.example/evolution/abc.jpeg")
        message = one(evolution(evolution_upsert(evolution_message_item(part))))

        assert message.media is not None
        assert (message.media.in_body, message.media.url) == (False, "https://s3.example/evolution/abc.jpeg")

    def test_a_voice_note(self) -> None:
        message = one(evolution(evolution_upsert(evolution_message_item(evolution_audio()))))

        assert message.type == "audio"
        assert message.media is not None and message.media.voice and message.media.mime_type.startswith("audio/ogg")

    def test_button_and_list_replies_read_as_their_titles(self) -> None:
        button = one(evolution(evolution_upsert(evolution_message_item(evolution_buttons_reply("Quero")))))
        row = one(evolution(evolution_upsert(evolution_message_item(evolution_list_reply("Plano anual")))))

        assert (button.type, button.text, button.quoted_id) == ("button", "Quero", "BAE5QUOTED")
        assert (row.type, row.text, row.quoted_id) == ("interactive", "Plano anual", "BAE5QUOTED")

    def test_an_ephemeral_wrapper_is_unwrapped(self) -> None:
        part = {"ephemeralMessage": {"message": {"extendedTextMessage": {"text": "SAIR"}}}}
        message = one(evolution(evolution_upsert(evolution_message_item(part))))
        assert (message.type, message.text) == ("text", "SAIR")

    def test_an_unknown_part_is_other(self) -> None:
        message = one(evolution(evolution_upsert(evolution_message_item({"pollCreationMessageV3": {"name": "?"}}))))
        assert message.type == "other"


class TestCloud:
    def test_a_text_message_with_its_profile_name(self) -> None:
        message = one(cloud(cloud_inbound(cloud_message({"text": {"body": "Oi"}}, timestamp=1_764_000_000))))

        assert (message.phone, message.profile_name, message.type, message.text) == (
            "+5511999990000",
            "Maria",
            "text",
            "Oi",
        )
        assert int(message.occurred_at.timestamp()) == 1_764_000_000  # type: ignore[union-attr]

    def test_an_image_carries_its_media_id(self) -> None:
        part = {"image": {"id": "1234567890", "mime_type": "image/jpeg", "sha256": "x", "caption": "foto"}}
        message = one(cloud(cloud_inbound(cloud_message(part))))

        assert (message.type, message.text) == ("image", "foto")
        assert message.media is not None and (message.media.media_id, message.media.mime_type) == (
            "1234567890",
            "image/jpeg",
        )

    def test_a_document_keeps_its_file_name(self) -> None:
        part = {"document": {"id": "99", "mime_type": "application/pdf", "filename": "boleto.pdf"}}
        message = one(cloud(cloud_inbound(cloud_message(part))))
        assert message.media is not None and message.media.file_name == "boleto.pdf"

    def test_a_button_reply(self) -> None:
        part = {"button": {"text": "Parar promoções", "payload": "STOP_PROMOS"}}
        message = one(cloud(cloud_inbound(cloud_message(part, context_id="wamid.OURS"))))

        assert (message.type, message.text, message.quoted_id) == ("button", "Parar promoções", "wamid.OURS")

    @pytest.mark.parametrize(
        "reply",
        [
            {"type": "button_reply", "button_reply": {"id": "yes", "title": "Sim"}},
            {"type": "list_reply", "list_reply": {"id": "row-1", "title": "Sim", "description": "..."}},
        ],
    )
    def test_interactive_replies(self, reply: dict[str, Any]) -> None:
        message = one(cloud(cloud_inbound(cloud_message({"interactive": reply}, context_id="wamid.OURS"))))
        assert (message.type, message.text, message.quoted_id) == ("interactive", "Sim", "wamid.OURS")

    def test_a_reaction_names_the_message_it_reacts_to(self) -> None:
        message = one(cloud(cloud_inbound(cloud_message({"reaction": {"message_id": "wamid.OURS", "emoji": "👍"}}))))
        assert (message.type, message.text, message.quoted_id) == ("reaction", "👍", "wamid.OURS")

    def test_a_location(self) -> None:
        part = {"location": {"latitude": -23.5, "longitude": -46.6, "name": "Loja", "address": "Av. Paulista"}}
        assert one(cloud(cloud_inbound(cloud_message(part)))).text == "Loja Av. Paulista"

    def test_a_username_user_without_a_phone_keeps_its_user_id(self) -> None:
        item = cloud_message({"text": {"body": "Oi"}}, sender="")
        item["from_user_id"] = "BR.1502576394655843"
        message = one(cloud(cloud_inbound(item, wa_id="", user_id="BR.1502576394655843")))

        assert (message.phone, message.wa_user_id, message.profile_name) == ("", "BR.1502576394655843", "Maria")

    def test_user_preferences_stop_and_resume(self) -> None:
        stop = cloud(cloud_user_preferences(value="stop"))
        resume = cloud(cloud_user_preferences(value="resume"))

        assert stop.actionable and stop.event_type == "user_preferences"
        assert [(c.phone, c.opted_out) for c in stop.consents] == [("+5511999990000", True)]
        assert [(c.phone, c.opted_out) for c in resume.consents] == [("+5511999990000", False)]
