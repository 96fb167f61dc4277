"""`wa-router` commands (API.md "Command line"), run in-process against a temp database."""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import uvicorn
from litestar import Litestar
from litestar.testing import TestClient

from app import cli
from app.cli import main

P = "WA_ROUTER_"


@pytest.fixture(autouse=True)
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("ACCESS_TOKEN", "APP_SECRET", "WORKER", "PORT", "HOST"):
        monkeypatch.delenv(P + name, raising=False)
    path = tmp_path / "cli.db"
    monkeypatch.setenv(P + "DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_migrate_then_senders_add_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "migrate")[0] == 0
    code, out, _ = run(
        capsys,
        "senders",
        "add",
        "--phone-number-id",
        "106540352242922",
        "--waba-id",
        "102290129340398",
        "--display-number",
        "+1 555 078 3881",
        "--name",
        "Support",
        "--max-mps",
        "250",
    )
    assert code == 0
    assert "added sender 106540352242922" in out
    assert (
        "updated"
        in run(
            capsys,
            "senders",
            "add",
            "--phone-number-id",
            "106540352242922",
            "--name",
            "Support line",
        )[1]
    )

    code, out, _ = run(capsys, "senders", "list", "--json")

    assert code == 0
    assert json.loads(out) == [
        {
            "phone_number_id": "106540352242922",
            "waba_id": "102290129340398",
            "display_number": "+15550783881",
            "name": "Support line",
            "max_mps": 250,
            "paused_until": None,
            "pause_reason": None,
        }
    ]
    assert "106540352242922" in run(capsys, "senders", "list")[1]


def test_keys_are_shown_once_listed_without_secrets_and_revocable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(
        capsys,
        "keys",
        "create",
        "--client",
        "crm",
        "--scopes",
        "messages:send,messages:read",
        "--senders",
        "106540352242922",
        "--json",
    )
    assert code == 0
    created = json.loads(out)
    assert set(created) == {"id", "key", "client", "scopes", "senders"}
    assert created["client"] == "crm"
    assert created["scopes"] == ["messages:read", "messages:send"]
    assert created["senders"] == ["106540352242922"]

    listed = json.loads(run(capsys, "keys", "list", "--json")[1])
    assert [k["id"] for k in listed] == [created["id"]]
    assert created["key"] not in json.dumps(listed)
    assert listed[0]["revoked_at"] is None

    assert run(capsys, "keys", "revoke", created["id"])[0] == 0
    assert json.loads(run(capsys, "keys", "list", "--json")[1])[0]["revoked_at"] is not None
    code, _, err = run(capsys, "keys", "revoke", "key_unknown")
    assert code == 2
    assert "no key" in err


@pytest.mark.parametrize(
    "argv",
    [
        ("keys", "create", "--client", "crm", "--scopes", "messages:write"),
        ("keys", "create", "--client", "crm", "--scopes", ","),
        ("keys", "create", "--client", " ", "--scopes", "messages:send"),
        ("senders", "add", "--phone-number-id", "abc"),
        ("senders", "add", "--phone-number-id", "1", "--max-mps", "0"),
        ("senders", "add", "--phone-number-id", "1", "--display-number", "012"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    code, out, err = run(capsys, *argv)

    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("wa-router: ")


def test_a_misconfiguration_stops_start_up_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(P + "ACCESS_TOKEN", "EAAG-real")

    code, _, err = run(capsys, "serve")

    assert code == 2
    assert err.strip().splitlines() == [
        "wa-router: configuration error: WA_ROUTER_APP_SECRET is required with a real "
        "WA_ROUTER_ACCESS_TOKEN (it verifies Meta's webhook signatures)"
    ]


def test_openapi_writes_the_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "openapi.json"

    assert run(capsys, "openapi", "--output", str(target))[0] == 0

    document = json.loads(target.read_text())
    assert document["openapi"].startswith("3.")
    assert "/v1/whatsapp/messages" in document["paths"]


def test_the_console_script_is_installed() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "wa-router"), "--help"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    for command in (b"serve", b"worker", b"migrate", b"senders", b"keys", b"openapi"):
        assert command in done.stdout


def test_a_paused_sender_is_listed_and_resumed(capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio
    from datetime import UTC, datetime

    from adapters.db import keys as key_repo
    from adapters.db.engine import Database
    from app.settings import load_settings

    run(capsys, "senders", "add", "--phone-number-id", "106540352242922")

    async def pause() -> None:
        db = Database(load_settings().database_url)
        async with db.write() as conn:
            await key_repo.pause_sender(
                conn,
                "106540352242922",
                until=datetime(9999, 12, 31, tzinfo=UTC),
                reason="190: Access token expired",
            )
        await db.dispose()

    asyncio.run(pause())

    listed = run(capsys, "senders", "list")[1]
    assert "paused" in listed
    assert "until resumed: 190: Access token expired" in listed
    code, out, _ = run(capsys, "senders", "resume", "106540352242922")
    assert code == 0
    assert "resumed sender 106540352242922" in out
    [sender] = json.loads(run(capsys, "senders", "list", "--json")[1])
    assert (sender["paused_until"], sender["pause_reason"]) == (None, None)
    code, _, err = run(capsys, "senders", "resume", "999")
    assert code == 2
    assert err.strip() == "wa-router: no sender 999"


def test_serve_freezes_the_heap_once_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full garbage collection over the started heap held the loop for tens of milliseconds
    (app/runtime.py freeze_heap): serve freezes it once the lifespan has built everything."""
    seen: dict[str, int | bool] = {}

    def run_app(app: Litestar, **_: object) -> None:
        with TestClient(app) as client:  # the lifespan, then the startup hooks
            seen["frozen"] = gc.get_freeze_count()
            services = app.state["services"]  # built by the lifespan
            # A frozen object is out of the collector's generations.
            seen["services_frozen"] = all(o is not services for o in gc.get_objects())
            seen["healthz"] = client.get("/healthz").status_code

    assert gc.get_freeze_count() == 0
    monkeypatch.setattr(uvicorn, "run", run_app)
    monkeypatch.setattr(cli, "configure_logging", lambda _format: None)  # as the test runner has it
    try:
        assert main(["serve"]) == 0
    finally:
        gc.unfreeze()
    assert seen["healthz"] == 200
    assert seen["frozen"] > 10_000
    assert seen["services_frozen"]  # frozen after the lifespan built them, not before


def test_a_worker_whose_metrics_port_is_taken_stops_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Logging stays as it is: configured onto capsys's stream, later tests would log into a
    # closed file.
    monkeypatch.setattr(cli, "configure_logging", lambda _format: None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run(capsys, "worker", "--metrics-port", str(port))
    assert code == 2
    assert err.strip().splitlines() == [
        f"wa-router: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    ]


@pytest.mark.parametrize("port", ["70000", "0", "-1", "http"])
def test_a_worker_metrics_port_out_of_range_is_refused(
    capsys: pytest.CaptureFixture[str], port: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["worker", "--metrics-port", port])
    assert stopped.value.code == 2
    assert "a port is a number from 1 to 65535" in capsys.readouterr().err
