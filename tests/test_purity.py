"""The core is pure: no infrastructure imports, no network, no reading of the clock.

Checked two ways: an AST scan of each core module's source (its own imports and every name it
uses that resolves to a clock function), and a fresh interpreter importing the core to see
that no infrastructure package gets loaded through a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path
import json
import subprocess
import sys

import pytest

from engine_helpers import ROOT

PACKAGE = ROOT / "orchestrator"
CORE = (
    "engine",
    "effects",
    "machine",
    "policies",
    "localtime",
    "compiler",
    "spec",
    "render",
    "durations",
    "segments",
    "simulate",
    "outbox",
    "apply",
)
# Infrastructure and anything that opens sockets.
BANNED_IMPORTS = frozenset(
    {
        "celery",
        "kombu",
        "sqlalchemy",
        "psycopg",
        "psycopg2",
        "asyncpg",
        "redis",
        "requests",
        "httpx",
        "urllib3",
        "aiohttp",
        "pika",
        "boto3",
        "botocore",
        "socket",
        "ssl",
        "smtplib",
        "http.client",
        "urllib.request",
        "asyncio",
        "subprocess",
    }
)
# Infrastructure packages must not even be loaded by a dependency. (``socket`` itself is not
# listed here: the standard library's importlib.metadata loads it without ever opening one.)
BANNED_LOADED = ("celery", "kombu", "sqlalchemy", "psycopg", "psycopg2", "asyncpg", "redis",
                 "requests", "httpx", "urllib3", "aiohttp", "pika", "boto3", "botocore")
CLOCK_READS = frozenset(
    {
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.datetime.today",
        "datetime.date.today",
        "time.time",
        "time.time_ns",
        "time.localtime",
        "time.gmtime",
        "time.monotonic",
        "time.perf_counter",
    }
)


def _is_banned(module: str) -> bool:
    return any(module == b or module.startswith(b + ".") for b in BANNED_IMPORTS)


def scan(source: str, filename: str = "<source>") -> list[str]:
    """Problems in ``source``: banned imports, and uses of clock-reading functions (called or
    merely referenced, e.g. ``default_factory=datetime.now``), through any import alias."""
    tree = ast.parse(source, filename)
    problems: list[str] = []
    aliases: dict[str, str] = {}  # local name -> fully qualified name
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _is_banned(a.name):
                    problems.append(f"{filename}:{node.lineno}: imports {a.name}")
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    top = a.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if _is_banned(node.module) or _is_banned(full):
                    problems.append(f"{filename}:{node.lineno}: imports {full}")
                aliases[a.asname or a.name] = full
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("__import__", "import_module"):
                problems.append(f"{filename}:{node.lineno}: dynamic import")

    def qualified(expr: ast.expr) -> str | None:
        if isinstance(expr, ast.Name):
            return aliases.get(expr.id)
        if isinstance(expr, ast.Attribute):
            base = qualified(expr.value)
            return f"{base}.{expr.attr}" if base else None
        return None

    for node in ast.walk(tree):
        if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(getattr(node, "ctx", None), ast.Load):
            name = qualified(node)
            if name in CLOCK_READS:
                problems.append(f"{filename}:{node.lineno}: reads the clock ({name})")
    return sorted(set(problems))


@pytest.mark.parametrize("module", CORE)
def test_core_module_is_pure(module):
    path = PACKAGE / f"{module}.py"
    assert path.is_file(), path
    assert scan(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))) == []


def _resolve(base: Path, module: str | None, names: list[str]) -> list[Path]:
    """The files a relative import in ``base`` (a folder of the package) refers to."""
    targets = [module] if module else names
    out = []
    for target in targets:
        path = base.joinpath(*target.split("."))
        if path.with_suffix(".py").is_file():
            out.append(path.with_suffix(".py"))
        elif (path / "__init__.py").is_file():
            out.append(path / "__init__.py")
    return out


def test_modules_the_core_imports_are_pure_too():
    """The orchestrator modules the core pulls in (catalog, loader, errors, stats, ...)."""
    seen: set[Path] = set()
    todo = [PACKAGE / f"{name}.py" for name in CORE]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                todo += _resolve(base, node.module, [a.name for a in node.names])
    extra = sorted(seen - {PACKAGE / f"{name}.py" for name in CORE})
    assert extra, "the closure should include helpers such as errors and loader"
    assert PACKAGE / "stats" / "funnel.py" in extra  # the dry-run counts with the stats code
    for path in extra:
        assert scan(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))) == []
    names = {p.stem for p in seen}
    assert "cli" not in names and "report" not in names and "from_store" not in names


def test_importing_the_core_loads_no_infrastructure():
    code = (
        "import importlib, json, sys\n"
        f"for m in {list(CORE)!r}:\n"
        "    importlib.import_module('orchestrator.' + m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = json.loads(out.stdout)
    assert "orchestrator.engine" in loaded
    bad = [m for m in loaded if m.split(".")[0] in BANNED_LOADED]
    assert bad == []


# -- the scanner itself catches what it should -----------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import requests",
        "import redis.client",
        "from sqlalchemy import create_engine",
        "from celery import Celery",
        "import httpx as h",
        "import socket",
        "from urllib.request import urlopen",
        "from datetime import datetime\nx = datetime.now()",
        "import datetime\nx = datetime.datetime.utcnow()",
        "import datetime as dt\nx = dt.datetime.now(dt.timezone.utc)",
        "from datetime import datetime as D\nf = D.now",
        "from datetime import date\nd = date.today()",
        "import time\nt = time.time()",
        "from time import time\nt = time()",
        "from time import time as clock\nt = clock()",
        "import time as t\nx = t.monotonic()",
    ],
)
def test_scanner_flags_impurity(source):
    assert scan(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "from datetime import datetime, timedelta\nx = datetime(2026, 1, 1) + timedelta(1)",
        "from datetime import datetime\ndef f(now: datetime): return now.astimezone()",
        "from urllib.parse import quote",
        "import hashlib\nhashlib.blake2b(b'')",
        "from datetime import time\nt = time(8, 0)",
        "class X:\n    def now(self): return 1\nX().now()",
    ],
)
def test_scanner_accepts_pure_code(source):
    assert scan(source) == []
