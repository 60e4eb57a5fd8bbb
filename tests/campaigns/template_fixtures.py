"""Meta-shaped templates for the template tests, and a Cloud connection with a WABA id."""

from __future__ import annotations

from typing import Any

WABA = "102290129340398"

ORDER_UPDATE: list[dict[str, Any]] = [  # POSITIONAL, text header, URL button
    {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}", "example": {"header_text": ["A-1"]}},
    {
        "type": "BODY",
        "text": "Hi {{1}}, your order {{2}} ships today.",
        "example": {"body_text": [["Ana", "A-1"]]},
    },
    {"type": "FOOTER", "text": "Reply STOP to opt out"},
    {
        "type": "BUTTONS",
        "buttons": [
            {"type": "URL", "text": "Track", "url": "https://shop.example/track/{{1}}", "example": ["A-1"]},
            {"type": "QUICK_REPLY", "text": "Stop promotions"},
        ],
    },
]

SPRING_SALE: list[dict[str, Any]] = [  # NAMED, image header
    {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["4::aW..."]}},
    {
        "type": "BODY",
        "text": "Hello {{first_name}}! {{discount}} off everything this week.",
        "example": {
            "body_text_named_params": [
                {"param_name": "first_name", "example": "Ana"},
                {"param_name": "discount", "example": "20%"},
            ]
        },
    },
    {"type": "FOOTER", "text": "Sense Shop"},
]

WELCOME: list[dict[str, Any]] = [{"type": "BODY", "text": "Welcome to Sense Shop!"}]
