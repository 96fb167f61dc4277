"""Configuration from ``WA_ROUTER_*`` (API.md "Configuration"): defaults, and one clear line for
each misconfiguration."""

from __future__ import annotations

import os

import pytest

from app.settings import LogFormat, Settings, SettingsError, WorkerMode, load_settings

P = "WA_ROUTER_"
REAL = {f"{P}ACCESS_TOKEN": "EAAG-real-token", f"{P}APP_SECRET": "app-secret"}


def test_defaults_match_the_contract() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.database_url == "sqlite+aiosqlite:///./wa-router.db"
    assert settings.access_token is None
    assert settings.graph_api_url == "https://graph.facebook.com"
    assert settings.graph_api_version == "v25.0"
    assert settings.app_secret is None
    assert settings.verify_token is None
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.send_rate_per_minute == 60
    assert settings.send_rate_per_hour == 0
    assert settings.read_rate_per_minute == 1200
    assert settings.worker is WorkerMode.EMBEDDED
    assert settings.reconcile_seconds == 120
    assert settings.log_format is None
    assert settings.sandbox


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("DATABASE_URL", "postgresql+asyncpg://u:p@db:5432/router", "database_url", None),
        ("DATABASE_URL", "sqlite+aiosqlite:////var/lib/router.db", "database_url", None),
        ("GRAPH_API_URL", "http://localhost:9000", "graph_api_url", None),
        ("GRAPH_API_VERSION", "v26.0", "graph_api_version", None),
        ("VERIFY_TOKEN", "hub-token", "verify_token", None),
        ("HOST", "0.0.0.0", "host", None),  # noqa: S104 - a listen address is the point here
        ("PORT", "9000", "port", 9000),
        ("PORT", "1", "port", 1),
        ("PORT", "65535", "port", 65535),
        ("SEND_RATE_PER_MINUTE", "0", "send_rate_per_minute", 0),
        ("SEND_RATE_PER_HOUR", "500", "send_rate_per_hour", 500),
        ("READ_RATE_PER_MINUTE", "30", "read_rate_per_minute", 30),
        ("RECONCILE_SECONDS", "2", "reconcile_seconds", 2),
        ("RECONCILE_SECONDS", "3600", "reconcile_seconds", 3600),
        ("WORKER", "off", "worker", WorkerMode.OFF),
        ("WORKER", "embedded", "worker", WorkerMode.EMBEDDED),
        ("LOG_FORMAT", "json", "log_format", LogFormat.JSON),
        ("LOG_FORMAT", "console", "log_format", LogFormat.CONSOLE),
    ],
)
def test_each_variable_is_read(variable: str, value: str, field: str, expected: object) -> None:
    settings = load_settings({P + variable: value})
    assert getattr(settings, field) == (value if expected is None else expected)


def test_a_real_token_with_an_app_secret_leaves_the_sandbox() -> None:
    settings = load_settings(REAL)
    assert settings.access_token == "EAAG-real-token"
    assert settings.app_secret == "app-secret"
    assert not settings.sandbox


def test_an_explicit_log_format_is_used() -> None:
    assert load_settings({f"{P}LOG_FORMAT": "json"}).resolved_log_format is LogFormat.JSON
    assert load_settings({f"{P}LOG_FORMAT": "console"}).resolved_log_format is LogFormat.CONSOLE


def test_other_variables_are_ignored() -> None:
    settings = load_settings({"PORT": "1", "ROUTER_PORT": "2", f"{P}NOT_A_SETTING": "x"})
    assert settings == Settings()


@pytest.mark.parametrize(
    "variable",
    [
        "DATABASE_URL",
        "GRAPH_API_URL",
        "GRAPH_API_VERSION",
        "APP_SECRET",
        "VERIFY_TOKEN",
        "HOST",
        "PORT",
        "SEND_RATE_PER_MINUTE",
        "SEND_RATE_PER_HOUR",
        "READ_RATE_PER_MINUTE",
        "WORKER",
        "LOG_FORMAT",
    ],
)
def test_an_empty_string_counts_as_unset(variable: str) -> None:
    assert load_settings({P + variable: ""}) == Settings()


def test_an_empty_access_token_is_an_error_not_the_sandbox() -> None:
    with pytest.raises(SettingsError, match=f"{P}ACCESS_TOKEN is set but empty"):
        load_settings({P + "ACCESS_TOKEN": ""})


def test_an_empty_app_secret_with_a_real_token_counts_as_missing() -> None:
    with pytest.raises(SettingsError, match=f"{P}APP_SECRET"):
        load_settings({f"{P}ACCESS_TOKEN": "EAAG-real-token", f"{P}APP_SECRET": ""})


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        pytest.param({f"{P}PORT": "http"}, f"{P}PORT", id="port-not-a-number"),
        pytest.param({f"{P}PORT": "0"}, f"{P}PORT", id="port-zero"),
        pytest.param({f"{P}PORT": "65536"}, f"{P}PORT", id="port-too-big"),
        pytest.param({f"{P}PORT": "-80"}, f"{P}PORT", id="port-negative"),
        pytest.param({f"{P}WORKER": "both"}, f"{P}WORKER", id="bad-worker-mode"),
        pytest.param({f"{P}WORKER": "OFF"}, f"{P}WORKER", id="worker-mode-is-lowercase"),
        pytest.param({f"{P}LOG_FORMAT": "xml"}, f"{P}LOG_FORMAT", id="bad-log-format"),
        pytest.param({f"{P}RECONCILE_SECONDS": "0"}, f"{P}RECONCILE_SECONDS", id="reconcile-0"),
        pytest.param(
            {f"{P}RECONCILE_SECONDS": "3601"}, f"{P}RECONCILE_SECONDS", id="reconcile-too-long"
        ),
        pytest.param(
            {f"{P}SEND_RATE_PER_MINUTE": "-1"}, f"{P}SEND_RATE_PER_MINUTE", id="negative-rate"
        ),
        pytest.param(
            {f"{P}READ_RATE_PER_MINUTE": "lots"}, f"{P}READ_RATE_PER_MINUTE", id="rate-not-int"
        ),
        pytest.param({f"{P}DATABASE_URL": "not a url"}, f"{P}DATABASE_URL", id="not-sqlalchemy"),
        pytest.param(
            {f"{P}DATABASE_URL": "./wa-router.db"}, f"{P}DATABASE_URL", id="a-path-not-a-url"
        ),
        pytest.param(
            {f"{P}DATABASE_URL": "mysql+aiomysql://u:p@db/router"},
            f"{P}DATABASE_URL",
            id="unsupported-driver",
        ),
        pytest.param(
            {f"{P}DATABASE_URL": "sqlite:///./wa-router.db"},
            f"{P}DATABASE_URL",
            id="sync-sqlite-driver",
        ),
        pytest.param(
            {f"{P}DATABASE_URL": "postgresql://u:p@db/router"},
            f"{P}DATABASE_URL",
            id="sync-postgres-driver",
        ),
        pytest.param(
            {f"{P}DATABASE_URL": "postgresql+asyncpg://u:p@db:port/router"},
            f"{P}DATABASE_URL",
            id="non-numeric-database-port",
        ),
        pytest.param({f"{P}ACCESS_TOKEN": "EAAG-real"}, f"{P}APP_SECRET", id="token-no-secret"),
        pytest.param({f"{P}ACCESS_TOKEN": "   "}, f"{P}ACCESS_TOKEN", id="blank-token"),
        pytest.param({f"{P}GRAPH_API_URL": "ftp://graph"}, f"{P}GRAPH_API_URL", id="ftp-graph"),
        pytest.param(
            {f"{P}GRAPH_API_URL": "graph.facebook.com"}, f"{P}GRAPH_API_URL", id="no-scheme"
        ),
        pytest.param({f"{P}GRAPH_API_URL": "https://"}, f"{P}GRAPH_API_URL", id="no-host"),
        pytest.param(
            {f"{P}GRAPH_API_URL": "https://[::1"}, f"{P}GRAPH_API_URL", id="unclosed-ipv6-host"
        ),
        pytest.param(
            {f"{P}GRAPH_API_VERSION": "25.0"}, f"{P}GRAPH_API_VERSION", id="version-without-v"
        ),
        pytest.param({f"{P}GRAPH_API_VERSION": "v"}, f"{P}GRAPH_API_VERSION", id="bare-v"),
        pytest.param(
            {f"{P}GRAPH_API_VERSION": "v25.0.1"}, f"{P}GRAPH_API_VERSION", id="version-3-parts"
        ),
    ],
)
def test_a_misconfiguration_is_one_line_naming_the_variable(
    environ: dict[str, str], variable: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)
    message = str(caught.value)
    assert variable in message
    assert "\n" not in message


def test_the_secret_value_is_not_echoed_in_the_error() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({f"{P}ACCESS_TOKEN": "EAAG-very-secret-token"})
    assert "EAAG-very-secret-token" not in str(caught.value)


def test_without_an_argument_the_process_environment_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in list(os.environ):
        if key.startswith(P):
            monkeypatch.delenv(key)
    monkeypatch.setenv(f"{P}PORT", "9123")
    monkeypatch.setenv(f"{P}WORKER", "off")
    settings = load_settings()
    assert (settings.port, settings.worker) == (9123, WorkerMode.OFF)
