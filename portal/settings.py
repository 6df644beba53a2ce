"""Sovereign settings. Every deploy-specific value comes from the environment (django-environ).

Defaults make `make run` work on a fresh machine: SQLite, an embedded filesystem Celery broker
(portal/embedded_broker.py), the local dev keystore and the embedded local Triton. Production
(SOVEREIGN_ENV=production) refuses to start without the values that must not be defaulted.
"""

import hashlib
import ipaddress
import os
import secrets
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from inference_backend.private_file import write_private

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# `*_FILE` variants let secrets come from mounted files instead of the environment.
env.smart_cast = True

SOVEREIGN_ENV = env.str("SOVEREIGN_ENV", default="development")
PRODUCTION = SOVEREIGN_ENV == "production"
DATA_DIR = Path(env.str("SOVEREIGN_DATA_DIR", default=str(BASE_DIR / "var")))


def _secret(name: str, default_factory=None) -> str:
    """Read NAME or the file named by NAME_FILE; in development fall back to default_factory()."""
    value = env.str(name, default="")
    path = env.str(f"{name}_FILE", default="")
    if path:
        value = Path(path).read_text().strip()
    if value:
        return value
    if PRODUCTION or default_factory is None:
        raise ImproperlyConfigured(f"{name} (or {name}_FILE) must be set when SOVEREIGN_ENV=production")
    return default_factory()


def _dev_secret_key() -> str:
    """A per-checkout development key kept in a 0600 file, so sessions survive restarts."""
    path = DATA_DIR / "dev_secret_key"
    if not path.exists():
        write_private(path, secrets.token_urlsafe(50).encode(), exclusive=True)  # a concurrent start's key wins
    return path.read_text().strip()


SECRET_KEY = _secret("SOVEREIGN_SECRET_KEY", _dev_secret_key)
DEBUG = env.bool("SOVEREIGN_DEBUG", default=False)
ALLOWED_HOSTS = env.list("SOVEREIGN_ALLOWED_HOSTS", default=["*"] if not PRODUCTION else [])
CSRF_TRUSTED_ORIGINS = env.list("SOVEREIGN_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "portal.admin_site.SovereignAdminConfig",  # django.contrib.admin: audited password change, no bulk delete
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc served from the package, never a CDN
    "guardian",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "auditlog",
    "apps.core",
    "apps.audit",
    "apps.accounts",
    "apps.keys",
    "apps.registry",
    "apps.deployments",
    "apps.gateway",
    "apps.compliance",
    "apps.observability",  # the dashboard's pre-aggregated series (docs/dashboard.md)
    "apps.demo",  # manage.py bootstrap_demo, what `make run` sets up
]

MIDDLEWARE = [
    "apps.core.middleware.RequestIdMiddleware",
    "apps.audit.middleware.AuditRefusalsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",  # the browser's Accept-Language (zh-CN → zh-hans)
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "apps.accounts.middleware.UserPreferencesMiddleware",  # the user's own language and time zone win
    "apps.core.throttling.RateLimitMiddleware",  # needs the session user; before anything costly
    "django_otp.middleware.OTPMiddleware",
    "apps.accounts.middleware.SessionLifetimeMiddleware",
    "apps.accounts.middleware.AccountGateMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses locked-out credentials before checking them
    "apps.accounts.backends.RoleBackend",  # ModelBackend plus unexpired break-glass roles
    "guardian.backends.ObjectPermissionBackend",
]
GUARDIAN_RAISE_403 = False
ANONYMOUS_USER_NAME = None  # no guardian anonymous user: anonymous callers get nothing

ROOT_URLCONF = "portal.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.installation",
            ],
        },
    },
]
WSGI_APPLICATION = "portal.wsgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'sovereign.sqlite3'}")}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("SOVEREIGN_DB_CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool("SOVEREIGN_DB_PREPARED", True):
    # Server-side binding lets psycopg prepare the statements the gateway repeats on every call, so
    # PostgreSQL stops parsing and planning them each time (measured: ~1 ms less per call). Turn off
    # behind PgBouncer in transaction-pooling mode, which cannot keep prepared statements.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"server_side_binding": True, "prepare_threshold": 2})
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, worker) share the file: wait for locks instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    {"NAME": "apps.accounts.passwords.PasswordAgeRecorder"},
]

LANGUAGE_CODE = "en-us"
# The interface's languages (issue 17): the browser chooses (Accept-Language) unless the user's
# Profile names one; docs/i18n.md.
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
# The default time zone of people who chose none (Profile.time_zone); times are stored in UTC.
TIME_ZONE = env.str("SOVEREIGN_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
# Date and time formats with seconds and the zone (portal/formats/<lang>/formats.py).
FORMAT_MODULE_PATH = ["portal.formats"]

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on a missing root before collectstatic
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = DEBUG

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env.bool("SOVEREIGN_SECURE_COOKIES", default=PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env.bool("SOVEREIGN_SSL_REDIRECT", default=PRODUCTION)
SECURE_HSTS_SECONDS = env.int("SOVEREIGN_HSTS_SECONDS", default=31536000 if PRODUCTION else 0)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("SOVEREIGN_BEHIND_TLS_PROXY", False) else None
# The portal's own host name and its subdomains only (never the parent domain): safe to pin to HTTPS.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SOVEREIGN_HSTS_INCLUDE_SUBDOMAINS", default=PRODUCTION)
SECURE_HSTS_PRELOAD = env.bool("SOVEREIGN_HSTS_PRELOAD", default=False)
# Production refuses SQLite, the local KEK, DEBUG and missing TLS at start (apps/core/production.py,
# docs/production.md) unless this names each one allowed: sqlite, local_kek, debug, no_tls. Audited.
INSECURE_OVERRIDE = env.list("SOVEREIGN_INSECURE_OVERRIDE", default=[])
# Each silence is justified here and listed in docs/production.md; tests/security/test_hardening.py
# fails on any other warning of `check --deploy` in production settings.
SILENCED_SYSTEM_CHECKS = [
    # security.W021 (SECURE_HSTS_PRELOAD off): the preload list takes only public registrable domains
    # served entirely over HTTPS, a decision for the organisation's whole domain, not for one
    # (usually internal) portal host; SOVEREIGN_HSTS_PRELOAD=true sets the header when it applies.
    "security.W021",
]
SESSION_COOKIE_AGE = env.int("SOVEREIGN_SESSION_MAX_AGE", default=12 * 3600)
# Messages wait for the next page in the server-side session, never in a cookie: some carry a secret
# shown once (a privileged role's enrolment code), and Django's cookie storage signs, not encrypts.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
LOGIN_URL = "/accounts/login/"  # everyone's (apps/accounts/urls.py); a path: the middleware appends ?next=

# --- Login security (HIPAA 164.312(a)(2)(iii), (d); 等保 8.1.4.1) -----------------------------
SESSION_IDLE_TIMEOUT = timedelta(minutes=env.int("SOVEREIGN_SESSION_IDLE_MINUTES", default=15))
SESSION_ABSOLUTE_TIMEOUT = timedelta(seconds=SESSION_COOKIE_AGE)
PASSWORD_MAX_AGE = timedelta(days=env.int("SOVEREIGN_PASSWORD_MAX_AGE_DAYS", default=90))
DORMANT_ACCOUNT_AGE = timedelta(days=env.int("SOVEREIGN_DORMANT_DAYS", default=90))
BREAK_GLASS_MAX = timedelta(hours=env.int("SOVEREIGN_BREAK_GLASS_MAX_HOURS", default=8))
# A privileged account enrols its TOTP only with a one-time code from the officer who gave the role.
ENROLMENT_CODE_LIFETIME = timedelta(hours=env.int("SOVEREIGN_ENROLMENT_CODE_HOURS", default=24))
# Lockout by (user name, address), plus a slower global throttle per user name that spares the
# addresses the account logged in from recently (apps/accounts/lockout.py, docs/access-control.md).
AXES_FAILURE_LIMIT = env.int("SOVEREIGN_LOCKOUT_FAILURES", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("SOVEREIGN_LOCKOUT_MINUTES", default=15))
LOCKOUT_GLOBAL_FAILURES = env.int("SOVEREIGN_LOCKOUT_GLOBAL_FAILURES", default=50)
LOCKOUT_GLOBAL_WINDOW = timedelta(minutes=env.int("SOVEREIGN_LOCKOUT_GLOBAL_MINUTES", default=60))
LOCKOUT_KNOWN_ADDRESS_AGE = timedelta(days=env.int("SOVEREIGN_LOCKOUT_KNOWN_ADDRESS_DAYS", default=30))
AXES_HANDLER = "apps.accounts.lockout.SlidingWindowHandler"  # N failures within the window, not "since start"
AXES_ENABLE_ACCESS_FAILURE_LOG = True  # the sliding window counts these rows
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]  # the pair, never either alone
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # a refused attempt checked no password: not a failure
# The failed-login rate rule (log-in monitoring, HIPAA 164.308(a)(5)(ii)(C)): this many refused logins
# for one user name, or from one address, within the window raise an alert (docs/alerts.md).
LOGIN_ALERT_ENABLED = env.bool("SOVEREIGN_LOGIN_ALERT", default=True)
LOGIN_ALERT_FAILURES = env.int("SOVEREIGN_LOGIN_ALERT_FAILURES", default=10)
LOGIN_ALERT_MINUTES = env.int("SOVEREIGN_LOGIN_ALERT_MINUTES", default=15)
AXES_CLIENT_IP_CALLABLE = "apps.core.netaddr.request_client_address"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_LOCKOUT_CALLABLE = "apps.accounts.views.lockout_response"
OTP_TOTP_ISSUER = env.str("SOVEREIGN_OTP_ISSUER", default="Sovereign")

# --- Client address and rate limits (apps/core/netaddr.py, apps/core/throttling.py) -----------
# X-Forwarded-For is believed only from these proxies (CIDRs): the client is the rightmost hop
# that is not one of them. Empty: the socket peer is the client and the header is ignored.
TRUSTED_PROXIES = env.list("SOVEREIGN_TRUSTED_PROXIES", default=[])
RATELIMIT_ENABLED = env.bool("SOVEREIGN_RATELIMIT_ENABLED", default=True)
RATELIMIT_ANONYMOUS = env.str("SOVEREIGN_RATELIMIT_ANONYMOUS", default="120/m")  # per address, no credentials
RATELIMIT_AUTH_FAILURES = env.str("SOVEREIGN_RATELIMIT_AUTH_FAILURES", default="20/m")  # per address
RATELIMIT_TOKEN = env.str("SOVEREIGN_RATELIMIT_TOKEN", default="600/m")  # per API token, API calls
RATELIMIT_SESSION = env.str("SOVEREIGN_RATELIMIT_SESSION", default="600/m")  # per signed-in user
RATELIMIT_GATEWAY = env.str("SOVEREIGN_RATELIMIT_GATEWAY", default="1000/s")  # per token, inference calls
RATELIMIT_IPV6_PREFIX = env.int("SOVEREIGN_RATELIMIT_IPV6_PREFIX", default=64)  # an IPv6 client owns a /64


def _check_client_settings() -> None:
    from apps.core.netaddr import parse_networks
    from apps.core.ratelimit import Rate

    try:
        parse_networks(TRUSTED_PROXIES)
        for name in ("ANONYMOUS", "AUTH_FAILURES", "TOKEN", "SESSION", "GATEWAY"):
            Rate.parse(globals()[f"RATELIMIT_{name}"])
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from exc


_check_client_settings()

# --- Sovereign ---------------------------------------------------------------------------
ARTIFACT_DIR = Path(env.str("SOVEREIGN_ARTIFACT_DIR", default=str(DATA_DIR / "artifacts")))
MAX_UPLOAD_BYTES = env.int("SOVEREIGN_MAX_UPLOAD_BYTES", default=512 * 1024 * 1024)
# GGUF imports (docs/llm.md): the upload is encrypted chunk by chunk into the staging directory
# (default <artifact dir>/staging; the web process and the workers must share it), never held whole.
MAX_IMPORT_BYTES = env.int("SOVEREIGN_MAX_IMPORT_BYTES", default=16 * 1024**3)
IMPORT_STAGING_DIR = env.str("SOVEREIGN_IMPORT_STAGING_DIR", default="")
# onnxruntime threads per instance of a deployed language model (the python backend's engine)
LLM_INTRA_OP_THREADS = env.int("SOVEREIGN_LLM_INTRA_OP_THREADS", default=2)
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("SOVEREIGN_MAX_REQUEST_BODY_BYTES", default=64 * 1024 * 1024)
# De-identification (docs/deidentification.md): the CPU seconds one request may spend in the
# de-identifier (refused with 413 deid_budget_exceeded past it, never forwarded), and the largest
# body a de-identified model accepts, refused by its Content-Length before it is read: 2 s at the
# 2 MB/s target, doubled, is 8 MB; a larger body could not be finished within the budget.
DEID_CPU_BUDGET = env.float("SOVEREIGN_DEID_CPU_BUDGET", default=2.0)
DEID_MAX_REQUEST_BYTES = env.int("SOVEREIGN_DEID_MAX_REQUEST_BYTES", default=8 * 1024 * 1024)
# Surrogate mode's conversation mappings (docs/deidentification.md): how long one is kept after its
# last call, and how many identifiers it may hold (past that the call is refused, 413
# deid_conversation_full: every call of a conversation loads its whole mapping and screens its
# answer against all its surrogates).
DEID_CONVERSATION_TTL = env.int("SOVEREIGN_DEID_CONVERSATION_TTL", default=3600)
DEID_CONVERSATION_MAX_ENTRIES = env.int("SOVEREIGN_DEID_CONVERSATION_MAX_ENTRIES", default=10_000)
if not DEID_CPU_BUDGET > 0:
    raise ImproperlyConfigured("SOVEREIGN_DEID_CPU_BUDGET must be a positive number of CPU seconds")
# The gateway's pseudonymisation key, stored wrapped by the KEK (apps/keys/pseudonym.py).
PSEUDONYM_KEY_FILE = env.str("SOVEREIGN_PSEUDONYM_KEY_FILE", default=str(DATA_DIR / "keystore" / "pseudonym-key.json"))
KEK_PROVIDER = env.str("SOVEREIGN_KEK_PROVIDER", default="local")
LOCAL_KEK_FILE = env.str("SOVEREIGN_LOCAL_KEK_FILE", default=str(DATA_DIR / "keystore" / "kek.bin"))
# SOVEREIGN_KEK_PROVIDER=pkcs11: the KEK lives in an HSM (inference_backend/pkcs11_kek.py); the PIN
# only ever comes from a file.
PKCS11 = {
    "MODULE": env.str("SOVEREIGN_PKCS11_MODULE", default=""),
    "TOKEN": env.str("SOVEREIGN_PKCS11_TOKEN", default=""),
    "PIN_FILE": env.str("SOVEREIGN_PKCS11_PIN_FILE", default=""),
    "KEY_LABEL": env.str("SOVEREIGN_PKCS11_KEY_LABEL", default=""),
    # the HSM vendor's SM4 wrapping mechanism number (no PKCS#11 standard defines SM4), e.g. 0x8000a201;
    # keys.sm4_key_wrapping looks for it in the token's mechanism list (docs/compliance.md, 国密)
    "SM4_WRAP_MECHANISM": int(env.str("SOVEREIGN_PKCS11_SM4_WRAP_MECHANISM", default="0") or "0", 0),
}
# one-time passwords of new enrolments: "TOTP-SHA1" (RFC 6238, authenticator apps) or "SM3" (GM/T 0021);
# empty: SM3 in 国密 mode (SOVEREIGN_ARTIFACT_SUITE=SM4-GCM), TOTP-SHA1 otherwise (apps.accounts.otp)
OTP_ALGORITHM = env.str("SOVEREIGN_OTP_ALGORITHM", default="")
if OTP_ALGORITHM not in ("", "TOTP-SHA1", "SM3"):
    raise ImproperlyConfigured(f"SOVEREIGN_OTP_ALGORITHM must be TOTP-SHA1 or SM3, not {OTP_ALGORITHM!r}")
# GB/T 39786 8.2: the TLCP (GB/T 38636) gateway in front of the portal and Triton, if any (free text,
# e.g. "tlcp-gw.example:443 (vendor, model, certificate no.)"); transit.tlcp also needs an attestation
TLCP_TERMINATOR = env.str("SOVEREIGN_TLCP_TERMINATOR", default="")
ARTIFACT_SUITE = env.str("SOVEREIGN_ARTIFACT_SUITE", default="AES-256-GCM")  # or SM4-GCM (国密)
if ARTIFACT_SUITE not in ("AES-256-GCM", "SM4-GCM"):
    raise ImproperlyConfigured(f"SOVEREIGN_ARTIFACT_SUITE must be AES-256-GCM or SM4-GCM, not {ARTIFACT_SUITE!r}")
TOKEN_DEFAULT_DAYS = env.int("SOVEREIGN_TOKEN_DEFAULT_DAYS", default=90)
TOKEN_MAX_DAYS = env.int("SOVEREIGN_TOKEN_MAX_DAYS", default=365)
# A privileged person (or the superuser) issues a token only this soon after passing the second factor.
TOKEN_OTP_FRESH = timedelta(minutes=env.int("SOVEREIGN_TOKEN_OTP_FRESH_MINUTES", default=5))
TRITON_TIMEOUT = env.float("SOVEREIGN_TRITON_TIMEOUT", default=30.0)
TRITON_LOAD_TIMEOUT = env.float("SOVEREIGN_TRITON_LOAD_TIMEOUT", default=300.0)
DEPLOY_MAX_RETRIES = env.int("SOVEREIGN_DEPLOY_MAX_RETRIES", default=5)
DEPLOY_RETRY_BASE_SECONDS = env.float("SOVEREIGN_DEPLOY_RETRY_BASE_SECONDS", default=2.0)
GATEWAY_POOL_SIZE = env.int("SOVEREIGN_GATEWAY_POOL_SIZE", default=64)
# The data plane (apps/gateway/dataplane, docs/gateway.md). At most GATEWAY_POOL_SIZE calls in
# flight per inference server; up to GATEWAY_MAX_WAITING more wait for a connection, the next is
# refused at once with 503 `upstream_busy` and Retry-After.
GATEWAY_MAX_WAITING = env.int("SOVEREIGN_GATEWAY_MAX_WAITING", default=256)
# A request body that has not arrived whole after this many seconds is refused (408), slowloris or not.
GATEWAY_BODY_TIMEOUT = env.float("SOVEREIGN_GATEWAY_BODY_TIMEOUT", default=30.0)
# Connections and calls in progress per data-plane process (HTTP: beyond it 503; gRPC: concurrent streams).
GATEWAY_MAX_CONNECTIONS = env.int("SOVEREIGN_GATEWAY_MAX_CONNECTIONS", default=2048)
# `make run` serves both planes on one port: the data plane relays every non-/v2 path to this URL.
PORTAL_UPSTREAM = env.str("SOVEREIGN_PORTAL_UPSTREAM", default="")
PORTAL_RELAY_TIMEOUT = env.float("SOVEREIGN_PORTAL_RELAY_TIMEOUT", default=600.0)
# The OpenAI-compatible API of the data plane (docs/llm.md): the request size, the prompt's
# characters and messages, the longest wait for the model's next event, and the streams in flight
# per inference server (a stream holds its upstream connection for the whole answer).
LLM_MAX_REQUEST_BYTES = env.int("SOVEREIGN_LLM_MAX_REQUEST_BYTES", default=4 * 1024 * 1024)
LLM_MAX_PROMPT_CHARS = env.int("SOVEREIGN_LLM_MAX_PROMPT_CHARS", default=200_000)
LLM_MAX_MESSAGES = env.int("SOVEREIGN_LLM_MAX_MESSAGES", default=256)
LLM_IDLE_TIMEOUT = env.float("SOVEREIGN_LLM_IDLE_TIMEOUT", default=120.0)
# A streaming client that takes longer than this to accept the next bytes is treated as gone.
LLM_SEND_TIMEOUT = env.float("SOVEREIGN_LLM_SEND_TIMEOUT", default=30.0)
GATEWAY_LLM_MAX_STREAMS = env.int("SOVEREIGN_GATEWAY_LLM_MAX_STREAMS", default=64)
# KServe v2 over gRPC on the data plane (0: off).
GATEWAY_GRPC_PORT = env.int("SOVEREIGN_GRPC_PORT", default=0)
# The data plane's replica choice (apps/gateway/dataplane/balancer.py, docs/gateway.md "Choosing a replica"):
# consecutive 5xx answers or read timeouts that open a server's circuit (a connection failure opens it at
# once), the mean Triton queue time counted as one more call in flight, and how often Triton's metrics are read.
GATEWAY_BREAKER_FAILURES = env.int("SOVEREIGN_GATEWAY_BREAKER_FAILURES", default=3)
GATEWAY_QUEUE_UNIT_US = env.float("SOVEREIGN_GATEWAY_QUEUE_UNIT_US", default=1000.0)
GATEWAY_METRICS_INTERVAL = env.float("SOVEREIGN_GATEWAY_METRICS_INTERVAL", default=1.5)
# The data plane's in-memory policy snapshot (apps/gateway/dataplane/snapshot.py) is rebuilt when a
# policy write commits (PostgreSQL NOTIFY; on SQLite a counter polled every 250 ms) and, as a
# backstop, at least every POLICY_MAX_AGE seconds; after POLICY_HARD_LIMIT seconds without a
# successful rebuild (database unreachable) the data plane refuses every call (503 policy_unavailable).
POLICY_MAX_AGE = env.float("SOVEREIGN_POLICY_MAX_AGE", default=5.0)
POLICY_HARD_LIMIT = env.float("SOVEREIGN_POLICY_HARD_LIMIT", default=60.0)

# --- Triton servers: which addresses, and TLS (docs/triton-tls.md) ---------------------------
# An allow-list of CIDRs every Triton server address must fall in (empty: any address but the
# always-refused link-local, multicast, unspecified, reserved and metadata ones).
TRITON_ALLOWED_NETWORKS = env.list("SOVEREIGN_TRITON_ALLOWED_NETWORKS", default=[])
for _cidr in TRITON_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_cidr.strip(), strict=True)
    except ValueError as _err:
        raise ImproperlyConfigured(
            f"SOVEREIGN_TRITON_ALLOWED_NETWORKS: {_cidr!r} is not a CIDR network ({_err})"
        ) from None
# The CA that signs Triton servers' (TLS proxies') certificates: only it is trusted, not the
# system store. Required in production for any non-loopback server. Client certificate for mTLS.
TRITON_CA_FILE = env.str("SOVEREIGN_TRITON_CA_FILE", default="")
TRITON_CLIENT_CERT_FILE = env.str("SOVEREIGN_TRITON_CLIENT_CERT_FILE", default="")
TRITON_CLIENT_KEY_FILE = env.str("SOVEREIGN_TRITON_CLIENT_KEY_FILE", default="")
if bool(TRITON_CLIENT_CERT_FILE) != bool(TRITON_CLIENT_KEY_FILE):
    raise ImproperlyConfigured("SOVEREIGN_TRITON_CLIENT_CERT_FILE and SOVEREIGN_TRITON_CLIENT_KEY_FILE go together")
for _name, _path in (
    ("SOVEREIGN_TRITON_CA_FILE", TRITON_CA_FILE),
    ("SOVEREIGN_TRITON_CLIENT_CERT_FILE", TRITON_CLIENT_CERT_FILE),
    ("SOVEREIGN_TRITON_CLIENT_KEY_FILE", TRITON_CLIENT_KEY_FILE),
):
    if _path and not os.path.isfile(_path):
        raise ImproperlyConfigured(f"{_name}: {_path} is not a readable file")

# --- Audit (docs/audit.md) -----------------------------------------------------------------
# HIPAA keeps documentation 6 years; apps.audit.retention.retention_days() reads this.
AUDIT_RETENTION_DAYS = env.int("SOVEREIGN_AUDIT_RETENTION_DAYS", default=2192)
# Activity review (HIPAA 164.308(a)(1)(ii)(D)): audit.activity_review passes when an auditor read the
# log (searched, opened, exported or verified it) within this many days.
AUDIT_REVIEW_DAYS = env.int("SOVEREIGN_AUDIT_REVIEW_DAYS", default=30)
AUDIT_CHECKPOINT_SECONDS = env.int("SOVEREIGN_AUDIT_CHECKPOINT_SECONDS", default=300)
# Rows one export may hold: the auditor (whole log) and the security officer (key events).
AUDIT_EXPORT_MAX_ROWS = env.int("SOVEREIGN_AUDIT_EXPORT_MAX_ROWS", default=2_000_000)
AUDIT_KEY_EXPORT_MAX_ROWS = env.int("SOVEREIGN_AUDIT_KEY_EXPORT_MAX_ROWS", default=100_000)
AUDIT_SEAL_BATCH = env.int("SOVEREIGN_AUDIT_SEAL_BATCH", default=5000)
# Unauthenticated refusals are collapsed into one counted event per (address, code, window)
# (apps/audit/refusals.py); past this many buckets in a window, new addresses share one.
AUDIT_REFUSAL_WINDOW_SECONDS = env.int("SOVEREIGN_AUDIT_REFUSAL_WINDOW_SECONDS", default=60)
AUDIT_REFUSAL_MAX_BUCKETS = env.int("SOVEREIGN_AUDIT_REFUSAL_MAX_BUCKETS", default=1000)
AUDIT_ARCHIVE_DIR = Path(env.str("SOVEREIGN_AUDIT_ARCHIVE_DIR", default=str(DATA_DIR / "audit-archive")))
# Checkpoint signing key: a local P-256 key file with the local KEK provider, an HSM key pair
# (this label, on the KEK's token) with SOVEREIGN_KEK_PROVIDER=pkcs11.
AUDIT_SIGNING_KEY_FILE = env.str(
    "SOVEREIGN_AUDIT_SIGNING_KEY_FILE", default=str(DATA_DIR / "keystore" / "audit-signing.pem")
)
# In 国密 mode (ARTIFACT_SUITE=SM4-GCM) checkpoints and reports are signed with SM2 by this local
# key file (0600), with either KEK provider: the supported PKCS#11 tokens have no SM2 (docs/audit.md).
AUDIT_SM2_SIGNING_KEY_FILE = env.str(
    "SOVEREIGN_AUDIT_SM2_SIGNING_KEY_FILE", default=str(DATA_DIR / "keystore" / "audit-signing-sm2.json")
)
AUDIT_SIGNING_KEY_LABEL = env.str("SOVEREIGN_AUDIT_SIGNING_KEY_LABEL", default="sovereign-audit-signing-v1")
# django-auditlog (field-level history, bridged into the chain by apps/audit/fieldlog.py)
AUDITLOG_CID_GETTER = "apps.core.context.current_request_id"
AUDITLOG_DISABLE_REMOTE_ADDR = True  # the bridged audit event records the source address
# Dotted paths of functions returning a minimum retention in days (the compliance profiles');
# apps.audit.retention.retention_days() keeps the longest of these and AUDIT_RETENTION_DAYS.
AUDIT_RETENTION_HOOKS = env.list(
    "SOVEREIGN_AUDIT_RETENTION_HOOKS", default=["apps.compliance.effective.audit_retention_days"]
)
# Retired checkpoint public keys (P-256 PEM or SM2 hex files, comma-separated) whose old signatures still count.
AUDIT_TRUSTED_KEYS = env.list("SOVEREIGN_AUDIT_TRUSTED_KEYS", default=[])

# --- Alerts (docs/alerts.md) -----------------------------------------------------------------
# The alert channel: a webhook that receives every alerting audit event as a JSON POST. The URL
# may carry a token, so it may come from a file (SOVEREIGN_ALERT_WEBHOOK_URL_FILE) and is never
# stored or logged (deliveries name the host and a fingerprint). Its address obeys the Triton
# server policy (inference_backend/netpolicy.py) with its own allow-list; loopback is allowed.
ALERT_WEBHOOK_URL = env.str("SOVEREIGN_ALERT_WEBHOOK_URL", default="")
if env.str("SOVEREIGN_ALERT_WEBHOOK_URL_FILE", default=""):
    ALERT_WEBHOOK_URL = Path(env.str("SOVEREIGN_ALERT_WEBHOOK_URL_FILE")).read_text().strip()
ALERT_ALLOWED_NETWORKS = env.list("SOVEREIGN_ALERT_ALLOWED_NETWORKS", default=[])
for _cidr in ALERT_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_cidr.strip(), strict=True)
    except ValueError as _err:
        raise ImproperlyConfigured(
            f"SOVEREIGN_ALERT_ALLOWED_NETWORKS: {_cidr!r} is not a CIDR network ({_err})"
        ) from None
ALERT_CA_FILE = env.str("SOVEREIGN_ALERT_CA_FILE", default="")  # empty: the system trust store
ALERT_TIMEOUT = env.float("SOVEREIGN_ALERT_TIMEOUT", default=10.0)
ALERT_MAX_ATTEMPTS = env.int("SOVEREIGN_ALERT_MAX_ATTEMPTS", default=6)
ALERT_RETRY_BASE_SECONDS = env.float("SOVEREIGN_ALERT_RETRY_BASE_SECONDS", default=5.0)
# alerts.delivery_proven passes only with an alert acknowledged by the channel within this many days.
ALERT_PROOF_DAYS = env.int("SOVEREIGN_ALERT_PROOF_DAYS", default=30)

# --- Metrics and monitoring alerts (docs/metrics.md) -----------------------------------------
# Who may scrape /metrics: a bearer token, kept only as its SHA-256 (SOVEREIGN_METRICS_TOKEN_SHA256,
# or SOVEREIGN_METRICS_TOKEN / _FILE, hashed here and the clear value dropped), and/or addresses in
# SOVEREIGN_METRICS_ALLOWED_NETWORKS (CIDR; the client address as the portal determines it). Neither
# set: every scrape is refused.
METRICS_TOKEN_SHA256 = env.str("SOVEREIGN_METRICS_TOKEN_SHA256", default="").strip().lower()
_metrics_token = env.str("SOVEREIGN_METRICS_TOKEN", default="")
if env.str("SOVEREIGN_METRICS_TOKEN_FILE", default=""):
    _metrics_token = Path(env.str("SOVEREIGN_METRICS_TOKEN_FILE")).read_text().strip()
if _metrics_token:
    METRICS_TOKEN_SHA256 = hashlib.sha256(_metrics_token.encode()).hexdigest()
del _metrics_token
METRICS_ALLOWED_NETWORKS = env.list("SOVEREIGN_METRICS_ALLOWED_NETWORKS", default=[])
for _cidr in METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_cidr.strip(), strict=True)
    except ValueError as _err:
        raise ImproperlyConfigured(
            f"SOVEREIGN_METRICS_ALLOWED_NETWORKS: {_cidr!r} is not a CIDR network ({_err})"
        ) from None
METRICS_TRITON_TIMEOUT = env.float("SOVEREIGN_METRICS_TRITON_TIMEOUT", default=5.0)
# The monitoring alerts the portal raises itself (apps/gateway/alerting.py, the same conditions as
# deploy/prometheus/alerts.yml): how often beat evaluates them and their thresholds.
MONITOR_ALERT_SECONDS = env.float("SOVEREIGN_MONITOR_ALERT_SECONDS", default=30.0)
MONITOR_ERROR_RATE = env.float("SOVEREIGN_MONITOR_ERROR_RATE", default=0.05)
MONITOR_ERROR_MIN_CALLS = env.int("SOVEREIGN_MONITOR_ERROR_MIN_CALLS", default=20)
MONITOR_ERROR_WINDOW_SECONDS = env.int("SOVEREIGN_MONITOR_ERROR_WINDOW_SECONDS", default=300)
MONITOR_SEALER_LAG_SECONDS = env.int("SOVEREIGN_MONITOR_SEALER_LAG_SECONDS", default=300)
MONITOR_QUOTA_RATIO = env.float("SOVEREIGN_MONITOR_QUOTA_RATIO", default=0.9)

# Central collection (等保 8.1.5.4): sealed audit events shipped to an external collector as JSON
# batches (docs/alerts.md, "Central collection"); same outbound address policy as the alert channel.
AUDIT_COLLECTOR_URL = env.str("SOVEREIGN_AUDIT_COLLECTOR_URL", default="")
if env.str("SOVEREIGN_AUDIT_COLLECTOR_URL_FILE", default=""):
    AUDIT_COLLECTOR_URL = Path(env.str("SOVEREIGN_AUDIT_COLLECTOR_URL_FILE")).read_text().strip()
AUDIT_SHIP_SECONDS = env.float("SOVEREIGN_AUDIT_SHIP_SECONDS", default=30.0)
AUDIT_SHIP_BATCH = env.int("SOVEREIGN_AUDIT_SHIP_BATCH", default=500)
# audit.central_collection fails when the oldest sealed event the collector has not acknowledged is older.
AUDIT_COLLECTOR_MAX_LAG_SECONDS = env.int("SOVEREIGN_AUDIT_COLLECTOR_MAX_LAG_SECONDS", default=600)

# --- Compliance (docs/compliance.md) -------------------------------------------------------
# Attestation files and signed reports (0600 files in 0700 directories).
COMPLIANCE_DIR = Path(env.str("SOVEREIGN_COMPLIANCE_DIR", default=str(DATA_DIR / "compliance")))
COMPLIANCE_EVALUATE_SECONDS = env.float("SOVEREIGN_COMPLIANCE_EVALUATE_SECONDS", default=3600.0)
# Backup and recovery checks (docs/compliance.md, "Backup and disaster recovery"): the newest WAL
# segment archived must be younger than this, and a successful restore drill recorded this recently.
BACKUP_WAL_MAX_AGE_HOURS = env.float("SOVEREIGN_BACKUP_WAL_MAX_AGE_HOURS", default=24.0)
RESTORE_DRILL_MAX_AGE_DAYS = env.int("SOVEREIGN_RESTORE_DRILL_MAX_AGE_DAYS", default=90)
# Where pg_dump / pg_restore live (empty: PATH); they must be at least the server's major version.
PG_BIN_DIR = env.str("SOVEREIGN_PG_BIN_DIR", default="")

# --- Celery ------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
    # Several portal nodes may each run beat (issue 16): RedBeat keeps the schedule in Redis and lets one
    # beat at a time hold a lock, so nothing is sent twice; when the holder dies its lock expires and a
    # waiting beat takes over within SOVEREIGN_BEAT_LOCK_SECONDS. The embedded (single-node) broker below
    # keeps Celery's file scheduler.
    CELERY_BEAT_SCHEDULER = "redbeat.RedBeatScheduler"
    CELERY_REDBEAT_REDIS_URL = REDIS_URL
    CELERY_REDBEAT_KEY_PREFIX = "sovereign:beat"
    CELERY_REDBEAT_LOCK_TIMEOUT = env.int("SOVEREIGN_BEAT_LOCK_SECONDS", default=30)
    # The holder renews the lock on every tick: tick at least three times per lock period.
    CELERY_BEAT_MAX_LOOP_INTERVAL = max(1, CELERY_REDBEAT_LOCK_TIMEOUT // 3)
else:
    # Embedded broker: kombu's filesystem transport needs no server, so `make run` works anywhere.
    # portal/embedded_broker.py publishes atomically (stage + rename): the stock transport let a
    # reader see a half-written message and crash the worker (issue 10). Folders 0700, files 0600.
    from portal.embedded_broker import prepare as _prepare_broker

    CELERY_BROKER_URL = "filesystem://localhost//"
    CELERY_BROKER_TRANSPORT = "portal.embedded_broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = _prepare_broker(DATA_DIR / "broker")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env.bool("SOVEREIGN_CELERY_EAGER", default=False)
CELERY_TASK_IGNORE_RESULT = True
# How often beat seals the audit chain. Nothing waits on it (unsealed events are stored, searchable
# and counted as `pending`; the compliance check allows 5 minutes): 10 s keeps the chain fresh
# without a broker message and a worker wake-up every second.
AUDIT_SEAL_SECONDS = env.float("SOVEREIGN_AUDIT_SEAL_SECONDS", default=10.0)
# Artifact verification (apps/registry/integrity.py): how many live artifacts each run decrypts and
# hashes, how often beat runs it, and how old the newest run may be for registry.artifact_integrity.
# platform.minimal_install: distributions allowed although no requirement needs them (pip, ...).
INSTALL_ALLOWLIST_FILE = Path(
    env.str("SOVEREIGN_INSTALL_ALLOWLIST", default=str(BASE_DIR / "deploy" / "install-allowlist.txt"))
)
# The signed manifest of the installed code (apps/compliance/manifest.py, platform.code_manifest).
CODE_MANIFEST_FILE = Path(env.str("SOVEREIGN_CODE_MANIFEST", default=str(DATA_DIR / "code-manifest.json")))
# keys.disposal also scans this host's `sovereign-*` temporary directories (the Triton models' cwd).
RESIDUE_TEMP_DIR = env.str("SOVEREIGN_RESIDUE_TEMP_DIR", default="")
# platform.listening (等保 8.1.3): the ports of this host's services, as deploy/run_local.py (make run)
# derives them from the same variables. Internal ones must listen on loopback only.
LISTEN_PUBLIC_PORT = env.int("SOVEREIGN_PORT", default=8000)
LISTEN_INTERNAL = {
    "portal (gunicorn)": env.int("SOVEREIGN_PORTAL_PORT", default=LISTEN_PUBLIC_PORT + 2),
    "triton http": env.int("SOVEREIGN_TRITON_PORT", default=18000),
    "triton grpc": env.int("SOVEREIGN_TRITON_PORT", default=18000) + 1,
    "triton metrics": env.int("SOVEREIGN_TRITON_PORT", default=18000) + 2,
    **{f"extra {p}": int(p) for p in env.list("SOVEREIGN_INTERNAL_PORTS", default=[]) if p},
}
LISTEN_PUBLIC = {
    "data plane (HTTP)": LISTEN_PUBLIC_PORT,
    "data plane (gRPC)": env.int("SOVEREIGN_GRPC_PORT", default=LISTEN_PUBLIC_PORT + 1),
}
INTEGRITY_SAMPLE_SIZE = env.int("SOVEREIGN_INTEGRITY_SAMPLE_SIZE", default=8)
INTEGRITY_VERIFY_SECONDS = env.float("SOVEREIGN_INTEGRITY_VERIFY_SECONDS", default=6 * 3600.0)
INTEGRITY_MAX_AGE_HOURS = env.float("SOVEREIGN_INTEGRITY_MAX_AGE_HOURS", default=24.0)
# Rollouts (docs/rollouts.md): how often beat runs the controller, how long the gateway's per-second
# figures are kept in Redis, how long a rollout waits for its new replicas to become ACTIVE, and how
# long a retired set keeps serving (weight 0) before its replicas are unloaded.
ROLLOUT_ADVANCE_SECONDS = env.float("SOVEREIGN_ROLLOUT_ADVANCE_SECONDS", default=2.0)
SLO_RETENTION_SECONDS = env.int("SOVEREIGN_SLO_RETENTION_SECONDS", default=6 * 3600)
ROLLOUT_READY_TIMEOUT_SECONDS = env.float("SOVEREIGN_ROLLOUT_READY_TIMEOUT_SECONDS", default=900.0)
ROLLOUT_DRAIN_SECONDS = env.float("SOVEREIGN_ROLLOUT_DRAIN_SECONDS", default=5.0)
# Issue 17: how often an admin page reloads itself while what it shows is still changing (a rollout under
# way, a server not up, a replica loading): docs/fleet.md, "Server health".
ADMIN_LIVE_REFRESH_SECONDS = env.int("SOVEREIGN_ADMIN_LIVE_REFRESH_SECONDS", default=5)
# Autoscaling (docs/fleet.md): how often beat runs the autoscaler, and how long it waits for a server's metrics.
AUTOSCALE_SECONDS = env.float("SOVEREIGN_AUTOSCALE_SECONDS", default=15.0)
AUTOSCALE_METRICS_TIMEOUT = env.float("SOVEREIGN_AUTOSCALE_METRICS_TIMEOUT", default=2.0)
# Batching tuner (docs/tuning.md): the defaults of a sweep and its limits. A sweep stores the
# durations it was asked for, so the worker drives each point as long as the row says.
TUNER_POINT_SECONDS = env.float("SOVEREIGN_TUNER_POINT_SECONDS", default=10.0)
TUNER_WARMUP_SECONDS = env.float("SOVEREIGN_TUNER_WARMUP_SECONDS", default=2.0)
TUNER_REPEATS = env.int("SOVEREIGN_TUNER_REPEATS", default=3)
TUNER_WINDOW_SECONDS = env.int("SOVEREIGN_TUNER_WINDOW_SECONDS", default=900)
TUNER_DEFAULT_SLO_P99_MS = env.float("SOVEREIGN_TUNER_DEFAULT_SLO_P99_MS", default=500.0)
TUNER_MAX_POINTS = env.int("SOVEREIGN_TUNER_MAX_POINTS", default=48)
TUNER_MAX_SECONDS = env.float("SOVEREIGN_TUNER_MAX_SECONDS", default=3600.0)
TUNER_MAX_RATE = env.float("SOVEREIGN_TUNER_MAX_RATE", default=2000.0)
TUNER_IN_FLIGHT = env.int("SOVEREIGN_TUNER_IN_FLIGHT", default=16)
# Dashboard series (docs/dashboard.md): how often beat rolls newly sealed gateway calls into the
# minute and hour series, how many audit sequence numbers one transaction reads, how long one run
# may catch up, and how long minute and hour points are kept.
OBSERVABILITY_ROLLUP_SECONDS = env.float("SOVEREIGN_OBSERVABILITY_ROLLUP_SECONDS", default=15.0)
OBSERVABILITY_ROLLUP_BATCH = env.int("SOVEREIGN_OBSERVABILITY_ROLLUP_BATCH", default=20000)
OBSERVABILITY_ROLLUP_BUDGET_SECONDS = env.float("SOVEREIGN_OBSERVABILITY_ROLLUP_BUDGET_SECONDS", default=60.0)
OBSERVABILITY_MINUTE_RETENTION_HOURS = env.int("SOVEREIGN_OBSERVABILITY_MINUTE_RETENTION_HOURS", default=48)
OBSERVABILITY_HOUR_RETENTION_DAYS = env.int("SOVEREIGN_OBSERVABILITY_HOUR_RETENTION_DAYS", default=90)
CELERY_BEAT_SCHEDULE = {
    "observability-rollup": {
        "task": "apps.observability.tasks.roll_up_calls_task",
        "schedule": OBSERVABILITY_ROLLUP_SECONDS,
        "options": {"expires": OBSERVABILITY_ROLLUP_SECONDS},  # a backlog of runs is one run
    },
    "autoscale-replica-sets": {
        "task": "apps.deployments.tasks.autoscale_task",
        "schedule": AUTOSCALE_SECONDS,
        "options": {"expires": AUTOSCALE_SECONDS},  # a backlog of ticks is one tick
    },
    "advance-rollouts": {
        "task": "apps.deployments.tasks.advance_rollouts_task",
        "schedule": ROLLOUT_ADVANCE_SECONDS,
        "options": {"expires": ROLLOUT_ADVANCE_SECONDS},  # a backlog of ticks is one tick
    },
    "reconcile-deployments": {"task": "apps.deployments.tasks.reconcile_all", "schedule": 60.0},
    "disable-dormant-accounts": {"task": "apps.accounts.tasks.disable_dormant_accounts", "schedule": 3600.0},
    "purge-expired-grants": {"task": "apps.accounts.tasks.purge_expired_grants", "schedule": 600.0},
    "resume-stalled-kek-rotations": {"task": "apps.keys.tasks.resume_stalled_rotations", "schedule": 60.0},
    "audit-seal": {
        "task": "apps.audit.tasks.seal_audit_log",
        "schedule": AUDIT_SEAL_SECONDS,
        "options": {"expires": AUDIT_SEAL_SECONDS},  # a backlog of seals is one seal
    },
    "audit-flush-refusals": {"task": "apps.audit.tasks.flush_refused_buckets", "schedule": 30.0},
    "audit-retention": {"task": "apps.audit.tasks.purge_expired_audit", "schedule": 86400.0},
    "llm-exchange-retention": {"task": "apps.gateway.tasks.purge_expired_exchanges", "schedule": 3600.0},
    "audit-ship": {
        "task": "apps.audit.tasks.ship_audit_events",
        "schedule": AUDIT_SHIP_SECONDS,
        "options": {"expires": AUDIT_SHIP_SECONDS},  # a backlog of shipping runs is one run
    },
    "alerts-resend-stalled": {"task": "apps.audit.tasks.resend_stalled_alerts", "schedule": 60.0},
    "monitor-alerts": {
        "task": "apps.gateway.tasks.evaluate_monitor_alerts",
        "schedule": MONITOR_ALERT_SECONDS,
        "options": {"expires": MONITOR_ALERT_SECONDS},  # a backlog of evaluations is one evaluation
    },
    "compliance-evaluate": {"task": "apps.compliance.tasks.evaluate_all", "schedule": COMPLIANCE_EVALUATE_SECONDS},
    "registry-verify-artifacts": {
        "task": "apps.registry.tasks.verify_artifacts_task",
        "schedule": INTEGRITY_VERIFY_SECONDS,
        "options": {"expires": INTEGRITY_VERIFY_SECONDS},  # a backlog of runs is one run
    },
}
# Routine beat tasks whose "sent / received / succeeded" INFO lines portal/celery.py drops from the
# worker's log (their warnings and errors are kept): at 10 s and 60 s they were most of its volume.
CELERY_QUIET_TASKS = [
    "apps.observability.tasks.roll_up_calls_task",
    "apps.audit.tasks.seal_audit_log",
    "apps.deployments.tasks.reconcile_all",
    "apps.deployments.tasks.advance_rollouts_task",
    "apps.deployments.tasks.autoscale_task",
    "apps.keys.tasks.resume_stalled_rotations",
    "apps.audit.tasks.resend_stalled_alerts",
    "apps.audit.tasks.ship_audit_events",
    "apps.gateway.tasks.evaluate_monitor_alerts",
]

# --- API ---------------------------------------------------------------------------------
API_MAX_PAGE_SIZE = env.int("SOVEREIGN_API_MAX_PAGE_SIZE", default=500)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.BearerTokenAuthentication",
        "apps.accounts.authentication.SessionAuthentication",  # refuses another site's requests
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.core.permissions.ActionPermission"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "apps.core.pagination.CappedLimitOffsetPagination",  # ?limit= ≤ API_MAX_PAGE_SIZE
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.core.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sovereign API",
    "DESCRIPTION": "Governance portal for private LLM deployments: registry, deployments, tokens, audit.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc from drf-spectacular-sidecar's static files: a hospital network reaches no CDN,
    # and no unpinned third-party script runs in a logged-in page.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Deployment.observed_state and DeploymentTransition.from_state/to_state share one choice set.
    "ENUM_NAME_OVERRIDES": {
        "ObservedStateEnum": "apps.deployments.models.Observed",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("SOVEREIGN_LOG_LEVEL", default="INFO")},
    # WeasyPrint logs every layout step of a compliance report at INFO.
    "loggers": {"weasyprint": {"level": "WARNING"}, "fontTools": {"level": "WARNING"}},
}

FILE_UPLOAD_HANDLERS = ["apps.core.uploads.InMemoryLimitedUploadHandler"]
