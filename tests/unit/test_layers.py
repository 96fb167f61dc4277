"""The import direction app -> adapters -> domain (STYLE.md §1), and proof the checker can fail."""

from __future__ import annotations

from pathlib import Path

from tests import layers


def test_the_import_direction_holds() -> None:
    assert layers.violations() == []


def test_the_checker_looks_at_every_layer() -> None:
    assert {"domain", "adapters", "app/services"} == set(layers.RULES)
    for layer in layers.RULES:
        assert any((layers.ROOT / layer).rglob("*.py")), layer


def test_imports_sees_every_form_of_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "leaky.py"
    module.write_text(
        "from __future__ import annotations\n"
        "import json\n"
        "import sqlalchemy.orm\n"
        "from httpx import AsyncClient\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import litestar\n"
        "def later():\n"
        "    from app.settings import Settings\n"
        "    import structlog as log\n"
        "from . import sibling\n"
        "from .model import Message\n"
    )
    found = list(layers.imports(module))
    assert found == [
        (1, "__future__"),
        (1, "__future__.annotations"),
        (2, "json"),
        (3, "sqlalchemy.orm"),
        (4, "httpx"),
        (4, "httpx.AsyncClient"),
        (5, "typing"),
        (5, "typing.TYPE_CHECKING"),
        (7, "litestar"),
        (9, "app.settings"),
        (9, "app.settings.Settings"),
        (10, "structlog"),
    ]
    forbidden_in_domain = {n for _, n in found if layers.forbidden(n, layers.RULES["domain"])}
    assert forbidden_in_domain == {
        "sqlalchemy.orm",
        "httpx",
        "httpx.AsyncClient",
        "litestar",
        "app.settings",
        "app.settings.Settings",
        "structlog",
    }


def test_imports_finds_nothing_forbidden_in_a_pure_module(tmp_path: Path) -> None:
    module = tmp_path / "pure.py"
    module.write_text("import datetime\nfrom dataclasses import dataclass\nfrom . import model\n")
    assert not any(layers.forbidden(n, layers.RULES["domain"]) for _, n in layers.imports(module))


def test_the_use_cases_may_not_reach_for_the_web_layer(tmp_path: Path) -> None:
    module = tmp_path / "use_case.py"
    module.write_text(
        "from app.errors import ApiError\n"
        "from app.http.problems import correlation_of\n"
        "import litestar.exceptions\n"
        "from app.httpish import thing\n"
        "from app import http\n"
    )
    rules = layers.RULES["app/services"]
    assert [n for _, n in layers.imports(module) if layers.forbidden(n, rules)] == [
        "app.http.problems",
        "app.http.problems.correlation_of",
        "litestar.exceptions",
        "app.http",
    ]
