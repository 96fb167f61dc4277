"""The import direction app -> adapters -> domain (run by `make lint`, and as a test).

domain/ imports only the standard library and itself; adapters/ never imports app/; the use
cases (app/services) never import the web layer (app/http, litestar)."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = {
    "litestar",
    "sqlalchemy",
    "httpx",
    "msgspec",
    "structlog",
    "alembic",
    "asyncpg",
    "aiosqlite",
    "uvicorn",
    "prometheus_client",
}
#: Directory -> the modules (and their submodules) it must not import.
RULES: dict[str, set[str]] = {
    "domain": {"adapters", "app", *FRAMEWORKS},
    "adapters": {"app"},
    "app/services": {"app.http", "litestar"},
}


def imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:  # `from app import http` imports the module app.http
                yield node.lineno, f"{node.module}.{alias.name}"


def forbidden(module: str, names: set[str]) -> bool:
    """Whether ``module`` is one of ``names`` or inside one of them."""
    return any(module == name or module.startswith(name + ".") for name in names)


def violations() -> list[str]:
    found = []
    for layer, rules in RULES.items():
        for path in sorted((ROOT / layer).rglob("*.py")):
            for line, module in imports(path):
                if forbidden(module, rules):
                    found.append(f"{path.relative_to(ROOT)}:{line}: {layer}/ imports {module}")
    return found


def main() -> int:
    problems = violations()
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(
            "import direction app -> adapters -> domain holds; app/services stay off the web layer"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
