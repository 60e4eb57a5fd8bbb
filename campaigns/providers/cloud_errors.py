"""Meta's Cloud API error codes: what each means, one line of what to do, and what Sense does.

Sources: developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes
and /work/shared/WHATSAPP.md. The same code reaches Sense in a send's answer
(`{"error": {"code", "message", "error_data": {"details"}}}`) or later in a failed status
webhook (`statuses[].errors[]`); both are looked up here.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from campaigns.providers.base import ErrorAction, ErrorInfo

# The template parameter and format errors (132000-132016): every delivery of a campaign
# carries the same template, so a run of them means the campaign itself is wrong.
TEMPLATE_RANGE = range(132000, 132017)

_TABLE: dict[int, tuple[str, object, ErrorAction]] = {
    # Throttling: back off and send again within the campaign.
    4: ("Too many API calls", _("The app hit Meta's API call limit: sending slows down and retries."), "throttle"),
    80007: (
        "Rate limit issues",
        _("The WhatsApp Business Account hit its rate limit: sending slows down and retries."),
        "throttle",
    ),
    130429: ("Rate limit hit", _("The number's throughput was exceeded: sending slows down and retries."), "throttle"),
    131056: (
        "Pair rate limit hit",
        _("Too many messages to this contact in a short time: it is retried after a pause."),
        "throttle",
    ),
    131048: (
        "Spam rate limit hit",
        _("Meta limits this number because many messages were blocked or reported: improve quality, then retry."),
        "throttle",
    ),
    # Meta's side had a problem: retried like a 5xx.
    1: ("API unknown", _("Meta had an unknown problem: it is retried."), "retry"),
    2: ("API service", _("Meta's service was briefly unavailable: it is retried."), "retry"),
    131000: ("Something went wrong", _("Meta had an internal problem: it is retried."), "retry"),
    131016: ("Service unavailable", _("Meta's service was unavailable: it is retried."), "retry"),
    # The contact.
    131026: (
        "Message undeliverable",
        _("The number is not on WhatsApp, has not accepted Meta's terms, or runs an old app: check the number."),
        "never",
    ),
    131047: (
        "Re-engagement message",
        _("Outside the 24-hour window: use a template."),
        "never_free_text",
    ),
    131049: (
        "Not delivered to maintain healthy ecosystem engagement",
        _("Meta's per-user marketing limit: do not retry before 24 hours."),
        "wait",
    ),
    131050: (
        "User stopped marketing messages",
        _("The contact stopped your marketing messages: they were opted out and are not messaged again."),
        "opt_out",
    ),
    131021: ("Recipient cannot be sender", _("The contact is the connection's own number: remove it."), "fail"),
    130472: (
        "User's number is part of an experiment",
        _("Meta held this marketing message back for an experiment: nothing to fix."),
        "fail",
    ),
    # Media.
    131051: (
        "Unsupported message type",
        _("This message type is not supported: send text, image, video, audio or a document."),
        "fail",
    ),
    131052: (
        "Media download error",
        _("The contact could not download the media: check the file and its link."),
        "fail",
    ),
    131053: (
        "Media upload error",
        _("Meta could not fetch or accept the media: check its type, size and that its URL is public."),
        "fail",
    ),
    # Templates (one entry per named code; the rest of 132000-132016 falls back below).
    132000: (
        "Number of parameters does not match",
        _("The template's parameters do not match what was sent: check the campaign's parameter mapping."),
        "template",
    ),
    132001: (
        "Template does not exist",
        _("The template does not exist in this language (or is not approved yet): sync templates and check."),
        "template",
    ),
    132005: (
        "Translated text too long",
        _("The template's text with its parameters filled in is too long: shorten the parameters."),
        "template",
    ),
    132007: (
        "Template format character policy violated",
        _("The parameters break Meta's formatting rules: remove new lines, tabs or long runs of spaces."),
        "template",
    ),
    132012: (
        "Parameter format mismatch",
        _("A parameter has the wrong format, often a missing or wrong header media: check the header."),
        "template",
    ),
    132015: (
        "Template is paused",
        _("Meta paused the template for low quality: wait, or use another template."),
        "template",
    ),
    132016: ("Template is disabled", _("Meta disabled the template: use another template."), "template"),
    # The account, the number, the app.
    0: ("AuthException", _("The access token is not valid any more: generate a new one."), "fail"),
    3: ("API method", _("The app lacks a permission: check its token scopes."), "fail"),
    10: ("Permission denied", _("The token lacks a permission or the number is not set up: check its scopes."), "fail"),
    100: (
        "Invalid parameter",
        _("Meta refused a parameter of the request: check the message and the connection."),
        "fail",
    ),
    190: (
        "Access token has expired",
        _("The access token expired: generate a new one and update the connection."),
        "fail",
    ),
    368: (
        "Temporarily blocked for policies violations",
        _("Meta blocked the number for policy violations: check the Business Manager."),
        "fail",
    ),
    131005: ("Access denied", _("The token lacks a permission: check its scopes."), "fail"),
    131008: ("Required parameter is missing", _("Meta expected a parameter the request lacked."), "fail"),
    131009: (
        "Parameter value is not valid",
        _("A value of the request is not valid, for example the phone number."),
        "fail",
    ),
    131031: ("Account has been locked", _("The business account is locked: check the Business Manager."), "fail"),
    131042: (
        "Business eligibility payment issue",
        _("Meta could not charge the business: check the payment method."),
        "fail",
    ),
    131045: ("Incorrect certificate", _("The number's registration is incomplete: register it again."), "fail"),
    131057: ("Account in maintenance mode", _("The business account is in maintenance: wait and retry."), "fail"),
    133010: (
        "Phone number not registered",
        _("The sending number is not registered with the Cloud API: register it."),
        "fail",
    ),
}


def codes_with_action(action: ErrorAction) -> frozenset[str]:
    """The codes on which Sense takes ACTION (the template range included)."""
    codes = {str(code) for code, (_title, _guidance, act) in _TABLE.items() if act == action}
    if action == "template":
        codes.update(str(code) for code in TEMPLATE_RANGE)
    return frozenset(codes)


# The codes Sense backs off on and sends again (Meta answers them with a 400).
THROTTLE_CODES = codes_with_action("throttle") | codes_with_action("retry")


def lookup(code: str) -> ErrorInfo | None:
    """What CODE (as Sense stores it: digits in a string) means, or None for a code this
    table does not know."""
    if not code.isdigit():
        return None
    number = int(code)
    entry = _TABLE.get(number)
    if entry is None and number in TEMPLATE_RANGE:
        entry = (
            "Template error",
            _("The template or its parameters were refused: check the template and its mapping."),
            "template",
        )
    if entry is None:
        return None
    title, guidance, action = entry
    return ErrorInfo(code=code, title=title, guidance=guidance, action=action)
