"""The SMTP core stays sans-IO: no module under mailward/smtp imports I/O or clocks."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import mailward.smtp

FORBIDDEN = {"asyncio", "socket", "ssl", "selectors", "threading", "select", "time", "uvloop", "aiosmtplib",
             "subprocess"}
SMTP_DIR = pathlib.Path(mailward.smtp.__file__).parent


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_no_io_imports_in_smtp_package():
    files = sorted(SMTP_DIR.glob("*.py"))
    assert len(files) >= 6
    offenders = {f.name: sorted(_imports(f) & FORBIDDEN) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


# Pure helpers outside the package the core may use (checked for I/O below like the core).
SHARED_PURE = {"values"}


def test_no_relative_import_leaves_the_package():
    # `from ..net import x` would smuggle I/O in through the back door
    for f in SMTP_DIR.glob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level == 2 and node.module in SHARED_PURE:
                    continue
                assert node.level <= 1, f"{f.name} imports from outside mailward.smtp"
                if node.level == 0 and node.module:
                    assert not node.module.startswith("mailward"), f.name


def test_the_shared_pure_helpers_import_no_io_and_nothing_of_mailward():
    for name in SHARED_PURE:
        path = SMTP_DIR.parent / f"{name}.py"
        assert not _imports(path) & FORBIDDEN, name
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0], name


def test_importing_the_core_loads_no_io_module():
    code = ("import sys, mailward.smtp.server, mailward.smtp.sasl, mailward.smtp.events;"
            "print(sorted(m for m in ('asyncio','socket','ssl','selectors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
