"""Sense settings: one module, every value read from the environment.

Absent variables fall back to the *embedded defaults* (SQLite under var/, local files
under var/media, local-memory cache, in-memory channel layer, Dramatiq actors run by a
worker inside the web process) so that `make run` works on any machine. Setting
DATABASE_URL, REDIS_URL, RABBITMQ_URL and S3_BUCKET switches each piece to the full
stack. A bad value stops start-up with ImproperlyConfigured naming the variable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("SENSE_VAR_DIR") or BASE_DIR / "var")

env = environ.Env()

T = TypeVar("T")


def _read(name: str, parse: Callable[[str], T], default: T) -> T:
    """Read NAME with PARSE; any parse error becomes a message that names the variable."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"{name}: invalid value {raw!r} ({exc})") from None


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _int(minimum: int = 0) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return parse


def _float(raw: str) -> float:
    value = float(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _list(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parsed = urlparse(raw)
        if parsed.scheme not in schemes or not (parsed.hostname or parsed.path):
            raise ValueError(f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return raw

    return parse


def _str(raw: str) -> str:
    return raw


# Meta's pricing categories (`statuses[].pricing.category`), the keys of CLOUD_PRICE_TABLE.
PRICE_CATEGORIES = (
    "marketing",
    "marketing_lite",
    "utility",
    "authentication",
    "authentication_international",
    "service",
    "referral_conversion",
)


def _price_table(raw: str) -> dict[str, Any]:
    """A JSON object: pricing category -> price of one message (a non-negative number), and
    optionally "currency" (a 3-letter code, shown with the costs)."""
    try:
        table = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from None
    if not isinstance(table, dict):
        raise ValueError('expected a JSON object such as {"marketing": 0.0625, "utility": 0.008}')
    for key, value in table.items():
        if key == "currency":
            if not (isinstance(value, str) and len(value) == 3 and value.isalpha()):
                raise ValueError("currency must be a 3-letter code such as USD or BRL")
        elif key not in PRICE_CATEGORIES:
            raise ValueError(f"unknown category {key!r} (expected {', '.join(PRICE_CATEGORIES)} or currency)")
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"the price of {key} must be a number of at least 0")
    return table


# --- Core ---------------------------------------------------------------------------

DEBUG = _read("DEBUG", _bool, False)
SECRET_KEY = _read("SECRET_KEY", _str, "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY: must be set when DEBUG is off (generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`)"
        )
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG-on"  # noqa: S105

ALLOWED_HOSTS = _read("ALLOWED_HOSTS", _list, ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS: list[str] = _read("CSRF_TRUSTED_ORIGINS", _list, [])
for _origin in CSRF_TRUSTED_ORIGINS:
    if "://" not in _origin:
        raise ImproperlyConfigured(f"CSRF_TRUSTED_ORIGINS: {_origin!r} must include the scheme")
TIME_ZONE = _read("TIME_ZONE", _str, "America/Sao_Paulo")
try:
    import zoneinfo

    zoneinfo.ZoneInfo(TIME_ZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(f"TIME_ZONE: unknown time zone {TIME_ZONE!r}") from None
USE_TZ = True
LANGUAGE_CODE = "pt-br"
LANGUAGES = [("pt-br", "Português (Brasil)"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True

# Behind a PaaS router (Railway, Heroku) TLS ends at the proxy, which says so in X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Off by default: the router already redirects (or refuses) plain HTTP on most PaaS.
SECURE_SSL_REDIRECT = _read("SECURE_SSL_REDIRECT", _bool, False)
# The platform's health probe calls the container over plain HTTP, without the router's header.
SECURE_REDIRECT_EXEMPT = [r"^api/health/"]
SECURE_HSTS_SECONDS = _read("SECURE_HSTS_SECONDS", _int(0), 0)
# Only sent with SECURE_HSTS_SECONDS; covers subdomains of the app's own host name.
SECURE_HSTS_INCLUDE_SUBDOMAINS = _read("SECURE_HSTS_INCLUDE_SUBDOMAINS", _bool, True)
SECURE_HSTS_PRELOAD = _read("SECURE_HSTS_PRELOAD", _bool, False)
# Preloading is a deliberate, hard-to-undo submission (hstspreload.org), never a default:
# SECURE_HSTS_PRELOAD=false is that decision, so `check --deploy` does not nag about it
# (W021); likewise an explicit SECURE_HSTS_INCLUDE_SUBDOMAINS=false (W005).
SILENCED_SYSTEM_CHECKS = ["security.W021"]
if not SECURE_HSTS_INCLUDE_SUBDOMAINS:
    SILENCED_SYSTEM_CHECKS.append("security.W005")
# Secure cookies unless DEBUG; COOKIE_SECURE=false serves plain-HTTP staging or local browser tests.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _read("COOKIE_SECURE", _bool, not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "channels",
    "django_dramatiq",
    "ninja",
    "axes",
    "sense",
    "media",
    "campaigns",
]

MIDDLEWARE = [
    # Request count and latency for Prometheus (sense.lib.metrics); first so it times everything.
    "sense.lib.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "sense.lib.static.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "sense.tenancy.TenantMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # 429 for an unknown API token past API_TOKEN_FAILURE_LIMIT (sense.throttle).
    "sense.throttle.TokenThrottleMiddleware",
    # Last, as django-axes requires: turns a locked-out login into the 429 page.
    "axes.middleware.AxesMiddleware",
]

# django-axes refuses logins of a locked (username, address) pair before any password check.
AUTHENTICATION_BACKENDS = [
    "sense.throttle.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "sense.urls"
WSGI_APPLICATION = "sense.wsgi.application"
ASGI_APPLICATION = "sense.asgi.application"
# Threads per web process that run Django's sync code for plain HTTP (sense.serving): a
# request waits for a free one. Webhook requests mostly wait for a group commit (no database
# connection of their own); other requests beyond DATABASE_POOL_MAX wait for a connection.
WEB_THREADS = _read("WEB_THREADS", _int(1), 32)
# How long a web process's thread may run Python before another thread waiting for the GIL
# forces a switch (sys.setswitchinterval; Python's default is 0.005). Requests release the
# GIL whenever they wait on the database, Redis or the network, so this only bounds runs of
# pure Python. With many request threads ready at once, a switch every 5 ms often preempts a
# thread inside one of the locks Django takes several times per request (asgiref's Local),
# and the others then queue behind it: 0.02 doubled the no-op view's throughput (bench/).
WEB_SWITCH_INTERVAL = _read("WEB_SWITCH_INTERVAL", _float, 0.02)
if not 0.0001 <= WEB_SWITCH_INTERVAL <= 1.0:
    raise ImproperlyConfigured("WEB_SWITCH_INTERVAL: between 0.0001 and 1 (seconds)")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Django 6 makes https the default scheme of form URL fields; opt in now.
FORMS_URLFIELD_ASSUME_HTTPS = True
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
# Where "/" sends a logged-in user (a URL name or path): the core's views name no app.
HOME_URL = "campaigns:list"
LOGOUT_REDIRECT_URL = "login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "sense.tenancy.tenant_context",
            ],
        },
    }
]

# --- Database -------------------------------------------------------------------------

DATABASE_URL = _read("DATABASE_URL", _url("postgres", "postgresql", "sqlite"), "")
if DATABASE_URL:
    DATABASES = {"default": env.db_url_config(DATABASE_URL)}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "sense.sqlite3"}}

_db = DATABASES["default"]
# The test database's name (the suite gives each run its own); default Django's test_<NAME>.
_test_name = _read("DATABASE_TEST_NAME", _str, "")
if _test_name:
    _db["TEST"] = {"NAME": _test_name}
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded worker threads write while requests write: WAL lets readers go on,
    # IMMEDIATE takes the write lock at BEGIN (no lock upgrade deadlock), and the busy
    # timeout makes a writer wait instead of raising "database is locked".
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
    }
else:
    # Under ASGI every request runs its sync code in a fresh thread, so CONN_MAX_AGE
    # would leak one connection per thread; psycopg's pool keeps connections across
    # requests and checks each one before handing it out.
    _db["CONN_MAX_AGE"] = 0
    _db.setdefault("OPTIONS", {})["pool"] = {
        "min_size": _read("DATABASE_POOL_MIN", _int(0), 1),
        "max_size": _read("DATABASE_POOL_MAX", _int(1), 20),
        "timeout": _read("DATABASE_POOL_TIMEOUT", _float, 10.0),
    }
    _db["CONN_HEALTH_CHECKS"] = True  # with a pool: ConnectionPool.check_connection on checkout
    _db["OPTIONS"].setdefault("connect_timeout", 5)

# --- Cache and channel layer --------------------------------------------------------

REDIS_URL = _read("REDIS_URL", _url("redis", "rediss"), "")
REDIS_TIMEOUT = _read("REDIS_TIMEOUT", _float, 1.0)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "sense",
            "OPTIONS": {
                "socket_connect_timeout": REDIS_TIMEOUT,
                "socket_timeout": REDIS_TIMEOUT,
                "health_check_interval": 30,
            },
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": "sense"},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "sense"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# Live frames (campaigns.live): a campaign's first change goes out at once, later ones at
# most this often per web or worker process (counted from when the previous frame was
# made), the latest state always last (0.252 s: 4 a second, with 2 ms for clock error).
LIVE_FRAME_INTERVAL_SECONDS = _read("LIVE_FRAME_INTERVAL_SECONDS", _float, 0.252)

# --- Files ----------------------------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "/media-files/"
MEDIA_ROOT = Path(_read("MEDIA_ROOT", _str, str(VAR_DIR / "media")))

S3_BUCKET = _read("S3_BUCKET", _str, "")
S3_ENDPOINT_URL = _read("S3_ENDPOINT_URL", _url("http", "https"), "")
S3_PUBLIC_ENDPOINT_URL = _read("S3_PUBLIC_ENDPOINT_URL", _url("http", "https"), "")
S3_ACCESS_KEY = _read("S3_ACCESS_KEY", _str, "")
S3_SECRET_KEY = _read("S3_SECRET_KEY", _str, "")
S3_REGION = _read("S3_REGION", _str, "us-east-1")
S3_TIMEOUT = _read("S3_TIMEOUT", _float, 5.0)
MEDIA_URL_EXPIRY = _read("MEDIA_URL_EXPIRY", _int(1), 600)

_staticfiles_backend = (
    "whitenoise.storage.CompressedManifestStaticFilesStorage"
    if not DEBUG
    else "django.contrib.staticfiles.storage.StaticFilesStorage"
)
if S3_BUCKET:
    _s3_options: dict[str, Any] = {
        "bucket_name": S3_BUCKET,
        "endpoint_url": S3_ENDPOINT_URL or None,
        "access_key": S3_ACCESS_KEY or None,
        "secret_key": S3_SECRET_KEY or None,
        "region_name": S3_REGION,
        "addressing_style": "path",
        "signature_version": "s3v4",
        "default_acl": "private",
        "querystring_auth": True,
        "querystring_expire": MEDIA_URL_EXPIRY,
        "file_overwrite": False,
        "custom_domain": None,
        "client_config": None,  # filled in by sense.lib.storage.client_config()
    }
    from sense.lib.storage import client_config

    _s3_options["client_config"] = client_config(connect_timeout=S3_TIMEOUT)
    STORAGES = {
        "default": {"BACKEND": "sense.lib.storage.MediaS3Storage", "OPTIONS": _s3_options},
        "staticfiles": {"BACKEND": _staticfiles_backend},
    }
else:
    STORAGES = {
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": MEDIA_ROOT, "base_url": MEDIA_URL},
        },
        "staticfiles": {"BACKEND": _staticfiles_backend},
    }

# --- Tasks (Dramatiq) -----------------------------------------------------------------

RABBITMQ_URL = _read("RABBITMQ_URL", _url("amqp", "amqps"), "") or _read(
    "RABBITMQ_PRIVATE_URL", _url("amqp", "amqps"), ""
)
# Without a broker the web process runs the actors itself (sense.tasks.start_embedded_worker).
TASKS_EMBEDDED = not RABBITMQ_URL
# Senders wait for their connection's rate budget in their thread: the default leaves two
# threads (webhooks, thumbnails) beside the CAMPAIGN_SENDERS (4) of a running campaign.
EMBEDDED_WORKER_THREADS = _read("EMBEDDED_WORKER_THREADS", _int(1), 6)
_dramatiq_middleware = [
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.Callbacks",
    "dramatiq.middleware.Retries",
    "django_dramatiq.middleware.DbConnectionsMiddleware",
    "sense.scheduler.Periodic",
    "sense.lib.heap.FreezeHeap",
]
# Sweepers and due-campaign checks run in each worker (sense.scheduler); off in tests that
# drive them by hand.
PERIODIC_ENABLED = _read("PERIODIC_ENABLED", _bool, True)
if RABBITMQ_URL:
    DRAMATIQ_BROKER = {
        "BROKER": "sense.lib.broker.RabbitmqBroker",
        "OPTIONS": {"url": RABBITMQ_URL, "confirm_delivery": True},
        "MIDDLEWARE": _dramatiq_middleware,
    }
else:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.stub.StubBroker",
        "OPTIONS": {},
        "MIDDLEWARE": _dramatiq_middleware,
    }
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]
DRAMATIQ_TASKS_DATABASE = "default"

# --- Observability --------------------------------------------------------------------

LOG_LEVEL = _read("LOG_LEVEL", _str, "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL: invalid value {LOG_LEVEL!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "sense.lib.logs.RedactSecretsFilter"}},
    "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "line", "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "pika": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}

SENTRY_DSN = _read("SENTRY_DSN", _url("http", "https"), "")
if SENTRY_DSN:
    import sentry_sdk

    sentry_sdk.init(dsn=SENTRY_DSN, send_default_pii=False, traces_sample_rate=0.0)

METRICS_TOKEN = _read("METRICS_TOKEN", _str, "")
HEALTH_CHECK_TIMEOUT = _read("HEALTH_CHECK_TIMEOUT", _float, 2.0)
HTTP_TIMEOUT = _read("HTTP_TIMEOUT", _float, 10.0)
HTTP_CONNECT_TIMEOUT = _read("HTTP_CONNECT_TIMEOUT", _float, 3.0)

# --- Media ----------------------------------------------------------------------------

# Allowed upload types (MIME types decided from the content) and the size limit of each
# kind, following WhatsApp Business's own limits.
MEDIA_ALLOWED_TYPES = _read(
    "MEDIA_ALLOWED_TYPES",
    _list,
    [
        "image/jpeg",
        "image/png",
        "image/webp",
        "audio/aac",
        "audio/amr",
        "audio/mpeg",
        "audio/mp4",
        "audio/ogg",
        "video/mp4",
        "video/3gpp",
        "application/pdf",
        "text/plain",
        "text/csv",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ],
)
MEDIA_MAX_IMAGE_BYTES = _read("MEDIA_MAX_IMAGE_BYTES", _int(1), 5 * 1024 * 1024)
MEDIA_MAX_AUDIO_BYTES = _read("MEDIA_MAX_AUDIO_BYTES", _int(1), 16 * 1024 * 1024)
MEDIA_MAX_VIDEO_BYTES = _read("MEDIA_MAX_VIDEO_BYTES", _int(1), 16 * 1024 * 1024)
MEDIA_MAX_DOCUMENT_BYTES = _read("MEDIA_MAX_DOCUMENT_BYTES", _int(1), 100 * 1024 * 1024)
MEDIA_MAX_IMAGE_PIXELS = _read("MEDIA_MAX_IMAGE_PIXELS", _int(1), 50_000_000)
MEDIA_THUMBNAIL_SIZE = _read("MEDIA_THUMBNAIL_SIZE", _int(16), 320)
MEDIA_THUMBNAIL_QUALITY = _read("MEDIA_THUMBNAIL_QUALITY", _int(1), 80)
# A thumbnail request that finds the thumbnail being made elsewhere (the job, another request)
# waits this long for it, then answers 503 rather than rendering it a second time.
MEDIA_THUMBNAIL_WAIT_SECONDS = _read("MEDIA_THUMBNAIL_WAIT_SECONDS", _float, 5.0)
# Uploads above the threshold go to S3 as a multipart upload of CHUNK-sized parts, at most
# CONCURRENCY parts in flight (that bounds the web process's memory per upload).
MEDIA_MULTIPART_THRESHOLD = _read("MEDIA_MULTIPART_THRESHOLD", _int(5 * 1024 * 1024), 8 * 1024 * 1024)
MEDIA_MULTIPART_CHUNK_SIZE = _read("MEDIA_MULTIPART_CHUNK_SIZE", _int(5 * 1024 * 1024), 8 * 1024 * 1024)
MEDIA_UPLOAD_CONCURRENCY = _read("MEDIA_UPLOAD_CONCURRENCY", _int(1), 4)

MEDIA_PROXY_TRUSTED_HOSTS: list[str] = _read("MEDIA_PROXY_TRUSTED_HOSTS", _list, [])
MEDIA_PROXY_MAX_BYTES = _read("MEDIA_PROXY_MAX_BYTES", _int(1), 10 * 1024 * 1024)
MEDIA_PROXY_CACHE_TTL = _read("MEDIA_PROXY_CACHE_TTL", _int(1), 24 * 3600)
MEDIA_PROXY_NEGATIVE_TTL = _read("MEDIA_PROXY_NEGATIVE_TTL", _int(1), 300)
MEDIA_PROXY_CONNECT_TIMEOUT = _read("MEDIA_PROXY_CONNECT_TIMEOUT", _float, 3.0)
MEDIA_PROXY_TIMEOUT = _read("MEDIA_PROXY_TIMEOUT", _float, 10.0)
MEDIA_PROXY_MAX_REDIRECTS = _read("MEDIA_PROXY_MAX_REDIRECTS", _int(0), 3)
# Buffered per-tenant daily media counters are written to the database at most this often.
MEDIA_METRICS_FLUSH_SECONDS = _read("MEDIA_METRICS_FLUSH_SECONDS", _float, 5.0)

# --- Delivery tracking (webhooks) ---
# Bodies over this are refused with 413 (checked on Content-Length and on the bytes read).
WEBHOOK_MAX_BODY_BYTES = _read("WEBHOOK_MAX_BODY_BYTES", _int(1024), 1024 * 1024)
# Group commit (sense.lib.groupcommit): each web process writes received events with at most
# WEBHOOK_INSERT_WRITERS INSERTs in flight; events arriving meanwhile share the next INSERT
# (at most WEBHOOK_INSERT_BATCH rows). Every event is committed before its 200.
WEBHOOK_INSERT_WRITERS = _read("WEBHOOK_INSERT_WRITERS", _int(1), 2)
WEBHOOK_INSERT_BATCH = _read("WEBHOOK_INSERT_BATCH", _int(1), 200)
# A stored event whose processing keeps failing is marked failed after this many attempts.
WEBHOOK_MAX_ATTEMPTS = _read("WEBHOOK_MAX_ATTEMPTS", _int(1), 5)
# Each web process wakes the workers for new events at once, then at most once per this
# interval while more arrive. A woken worker process applies pending events with one thread
# while they keep coming, at most one batch per WEBHOOK_BATCH_INTERVAL_SECONDS (a full batch
# waiting goes at once); wake-ups meanwhile only make it look again (tracking.drain_pending).
WEBHOOK_WAKE_INTERVAL_SECONDS = _read("WEBHOOK_WAKE_INTERVAL_SECONDS", _float, 0.05)
WEBHOOK_BATCH_INTERVAL_SECONDS = _read("WEBHOOK_BATCH_INTERVAL_SECONDS", _float, 0.02)
# The sweeper's interval, and how old a stored event must be before it takes it over
# from the actor (events are normally processed within milliseconds).
WEBHOOK_SWEEP_SECONDS = _read("WEBHOOK_SWEEP_SECONDS", _float, 10.0)
WEBHOOK_SWEEP_GRACE_SECONDS = _read("WEBHOOK_SWEEP_GRACE_SECONDS", _float, 30.0)
# Early status events (message id not recorded yet) older than this are dropped.
WEBHOOK_EARLY_EVENT_TTL_HOURS = _read("WEBHOOK_EARLY_EVENT_TTL_HOURS", _int(1), 72)
# How long a web process reuses a webhook token's connection lookup (deactivation and
# credential changes take effect within this).
WEBHOOK_CONNECTION_CACHE_SECONDS = _read("WEBHOOK_CONNECTION_CACHE_SECONDS", _float, 5.0)
# Raw bodies of processed and ignored events are deleted after this many days (pending and
# failed ones are kept; the per-delivery status history is kept).
WEBHOOK_RETENTION_DAYS = _read("WEBHOOK_RETENTION_DAYS", _int(1), 30)
# An inbound message that quotes none of our messages is a reply to the contact's latest
# campaign message sent this many hours before it, if any (0: only quoted replies count).
REPLY_ATTRIBUTION_HOURS = _read("REPLY_ATTRIBUTION_HOURS", _int(0), 72)

# --- Campaigns (contacts, connections, sending) ---
# Region used to read phone numbers written without a country code (contacts, CSV import).
DEFAULT_PHONE_REGION = _read("DEFAULT_PHONE_REGION", _str, "BR").upper()
# Cloud API connections created without a base URL use Meta's Graph API at this version.
CLOUD_API_BASE_URL = _read("CLOUD_API_BASE_URL", _url("http", "https"), "https://graph.facebook.com/v21.0")
# Cloud API price of one message per pricing category, in the tenant's currency, e.g.
# {"currency": "USD", "marketing": 0.0625, "utility": 0.008}: campaign pages then show an
# estimated cost before start and a running cost of the billable messages. Empty: no costs.
CLOUD_PRICE_TABLE: dict[str, Any] = _read("CLOUD_PRICE_TABLE", _price_table, {})
# How often workers sync the message templates of Cloud API connections with a WABA id.
CLOUD_TEMPLATE_SYNC_SECONDS = _read("CLOUD_TEMPLATE_SYNC_SECONDS", _float, 3600.0)
# Sender actors working on one running campaign at a time (they share the connection's limit).
CAMPAIGN_SENDERS = _read("CAMPAIGN_SENDERS", _int(1), 4)
# Deliveries one sender claims per round trip (more: faster unlimited sends; a killed worker
# leaves at most this many per sender in `unknown`).
CAMPAIGN_CLAIM_BATCH = _read("CAMPAIGN_CLAIM_BATCH", _int(1), 10)
# A connection's `rate_per_minute` counts sends in any window of this many seconds (tests
# shrink it), widened by the slack to absorb the gap between the limiter and the provider.
CAMPAIGN_RATE_WINDOW = _read("CAMPAIGN_RATE_WINDOW", _float, 60.0)
CAMPAIGN_RATE_SLACK = _read("CAMPAIGN_RATE_SLACK", _float, 0.5)
# A run of this many provider errors in a row pauses the campaign, with the reason shown.
CAMPAIGN_MAX_CONSECUTIVE_ERRORS = _read("CAMPAIGN_MAX_CONSECUTIVE_ERRORS", _int(1), 20)
# Transient failures (429, 5xx, no connection) are retried this many times per delivery.
CAMPAIGN_MAX_ATTEMPTS = _read("CAMPAIGN_MAX_ATTEMPTS", _int(1), 5)
# A delivery still `sending` after this long lost its worker: it becomes `unknown`, never re-sent.
CAMPAIGN_SENDING_STALE_SECONDS = _read("CAMPAIGN_SENDING_STALE_SECONDS", _int(1), 120)
# How often workers look for scheduled campaigns that are due (and stalled running ones).
CAMPAIGN_DUE_CHECK_SECONDS = _read("CAMPAIGN_DUE_CHECK_SECONDS", _float, 2.0)
# The audience snapshot of a started campaign (status `preparing`) is taken by a worker in
# transactions of this many contacts each (its progress shows after each one) ...
CAMPAIGN_PREPARE_CHUNK = _read("CAMPAIGN_PREPARE_CHUNK", _int(1), 10_000)
# ... and a snapshot whose worker has shown no progress for this long is restarted by the
# periodic kick (it goes on from its last chunk; no contact gets two deliveries).
CAMPAIGN_PREPARE_STALE_SECONDS = _read("CAMPAIGN_PREPARE_STALE_SECONDS", _float, 60.0)
# Prefix for media URLs that the storage returns relative (embedded mode, FileSystemStorage),
# so the provider can fetch them, e.g. https://sense.example.com
CAMPAIGN_MEDIA_BASE_URL = _read("CAMPAIGN_MEDIA_BASE_URL", _url("http", "https"), "")
# The RabbitMQ queue of the sender actors (separate test runs on one broker use their own).
CAMPAIGN_QUEUE = _read("CAMPAIGN_QUEUE", _str, "campaigns")

# --- Login and API token throttling ---
# A username that fails this many logins from one client address is locked out, for that
# address only, until LOGIN_LOCKOUT_MINUTES pass (the right password is refused too).
LOGIN_FAILURE_LIMIT = _read("LOGIN_FAILURE_LIMIT", _int(1), 5)
LOGIN_LOCKOUT_MINUTES = _read("LOGIN_LOCKOUT_MINUTES", _float, 15.0)
if LOGIN_LOCKOUT_MINUTES <= 0:
    raise ImproperlyConfigured(f"LOGIN_LOCKOUT_MINUTES: invalid value {LOGIN_LOCKOUT_MINUTES!r} (must be positive)")
# Requests with an unknown API token from one client address, per minute, before 429.
API_TOKEN_FAILURE_LIMIT = _read("API_TOKEN_FAILURE_LIMIT", _int(1), 50)

# django-axes with its database handler: the attempts are rows an admin can delete (unlock)
# in the admin; expired ones are deleted at every new failure, so the table stays small.
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# The address is REMOTE_ADDR, which uvicorn sets from X-Forwarded-For only for the hops in
# FORWARDED_ALLOW_IPS (see the Procfile); the API token throttle uses the same function.
AXES_CLIENT_IP_CALLABLE = "sense.throttle.client_address"
AXES_LOCKOUT_CALLABLE = "sense.throttle.lockout_response"
# A lockout ends LOGIN_LOCKOUT_MINUTES after the failure that caused it: attempts during it
# neither count nor extend it, so the minutes the page shows are true.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
# Successful logins are not recorded (that log would grow forever and hold every address).
AXES_DISABLE_ACCESS_LOG = True
# Log lines name the username and address (never the password, which axes always masks).
AXES_SENSITIVE_PARAMETERS: list[str] = []
# Contact imports (CSV): files of more rows than this go to a worker and answer at once (202);
# smaller ones are imported inside the request, as before.
CONTACT_IMPORT_SYNC_MAX_ROWS = _read("CONTACT_IMPORT_SYNC_MAX_ROWS", _int(0), 5000)
# Rows per transaction: a background import commits its progress after each chunk, and a
# worker that dies resumes after the last committed one.
CONTACT_IMPORT_CHUNK_ROWS = _read("CONTACT_IMPORT_CHUNK_ROWS", _int(1), 5000)
# A contact's WhatsApp profile picture URL is asked of its gateway at most this often (seconds).
PROFILE_PICTURE_TTL = _read("PROFILE_PICTURE_TTL", _int(60), 24 * 3600)
# A running import whose worker has not reported for this long is taken over by the sweeper.
CONTACT_IMPORT_STALE_SECONDS = _read("CONTACT_IMPORT_STALE_SECONDS", _int(1), 120)
CONTACT_IMPORT_SWEEP_SECONDS = _read("CONTACT_IMPORT_SWEEP_SECONDS", _float, 30.0)
# Claims of one import (first run plus resumes) before it is marked failed.
CONTACT_IMPORT_MAX_ATTEMPTS = _read("CONTACT_IMPORT_MAX_ATTEMPTS", _int(1), 5)

# --- Sandbox gateway (campaigns/providers/sandbox.py) ---
# The built-in simulated provider: sends go nowhere and its workers post realistic status
# webhooks back to Sense. Off, sandbox connections can be neither created nor used, so a
# production deployment never sends into it by mistake.
SANDBOX_ENABLED = _read("SANDBOX_ENABLED", _bool, DEBUG)
# Sense's own URL as its workers reach it: where a new sandbox connection posts its webhooks
# (its base URL) unless given another one. `make run` sets it from PORT.
SANDBOX_WEBHOOK_BASE_URL = _read("SANDBOX_WEBHOOK_BASE_URL", _url("http", "https"), "http://127.0.0.1:8000")
