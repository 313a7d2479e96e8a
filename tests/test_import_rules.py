"""The import rules of docs/design.md, kept by walking every module's imports (issue 10).

Every `import` and `from … import` in camrec counts, also those inside functions and under
TYPE_CHECKING: a lazy import is still a dependency, and lazy imports are how circles hid before.
Three rules:
1. Layers: each package imports only the packages its layer allows (LAYERS below, the same table
   as docs/design.md). Since the allowed sets form a strict order, no two packages import each
   other: there is no circle between packages.
2. The pure core (crypto, the clip policy, the motion core, retention planning, the config models)
   imports nothing from the shell: no threads, sockets, processes, databases, temporary files or
   media I/O, and no camrec package that has them.
3. Every package's __init__ says in its docstring what the package is and what it may import.
The last test plants a back-import in a copy of the tree and shows the checker catches it.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "camrec"

FOUNDATION = "foundation"  # camrec/__init__, errors, redact, printable, timeparse, clock
# Which groups each group may import (itself always). The order of this table is the layer order.
LAYERS: dict[str, set[str]] = {
    FOUNDATION: set(),
    "crypto": {FOUNDATION},
    "config": {FOUNDATION, "crypto"},
    "store": {FOUNDATION, "crypto"},
    "sources": {FOUNDATION},
    "motion": {FOUNDATION, "sources"},
    "record": {FOUNDATION, "crypto", "store", "sources", "motion"},
    "owner": {FOUNDATION, "crypto", "store"},
    # Later issues: the web app and live view, MQTT/metrics/discovery. The service starts them;
    # nothing in the recording path imports them, and they only subscribe to hubs.
    "web": {FOUNDATION, "config", "store", "sources"},
    "integrations": {FOUNDATION, "config", "store", "sources"},
    "service": {FOUNDATION, "crypto", "config", "store", "sources", "motion", "record", "web", "integrations"},
    "top": {FOUNDATION, "crypto", "config", "store", "sources", "motion", "record", "owner", "web", "integrations",
            "service"},
}
TOP_MODULES = {"cli", "__main__"}
TOP_PACKAGES = {"commands", "bench"}

PURE_CORE = (
    "camrec.crypto.",
    "camrec.record.policy",
    "camrec.motion.detector",
    "camrec.motion.model",
    "camrec.motion.light",
    "camrec.motion.stages",
    "camrec.motion.tuning",
    "camrec.store.retention",
    "camrec.config.models",
)
# The shell: what the pure core must never import (stdlib and third-party top-level names).
SHELL_MODULES = {
    "threading", "_thread", "queue", "socket", "socketserver", "ssl", "selectors", "asyncio", "signal",
    "subprocess", "multiprocessing", "concurrent", "sqlite3", "tempfile", "shutil", "http", "urllib.request",
    "av", "aiohttp", "aiortc", "paho", "prometheus_client",
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def group_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return FOUNDATION
    head = parts[1]
    if head in TOP_PACKAGES or head in TOP_MODULES:
        return "top"
    if head in LAYERS:
        return head
    return FOUNDATION  # a top-level module such as camrec.errors or camrec.clock


def imports_of(path: Path, module: str, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:  # "from camrec import audit" imports the module camrec.audit
                if f"{base}.{alias.name}" in known:
                    yield node.lineno, f"{base}.{alias.name}"


def violations(root: Path) -> list[str]:
    files = sorted(root.rglob("*.py"))
    known = {module_name(f, root) for f in files}
    found: list[str] = []
    for path in files:
        module = module_name(path, root)
        group = group_of(module)
        where = f"{path.relative_to(root.parent)}"
        pure = any(module == p or (p.endswith(".") and module.startswith(p)) for p in PURE_CORE)
        for line, imported in imports_of(path, module, known):
            if imported == "camrec" or imported.startswith("camrec."):
                target = group_of(imported)
                if target != group and target not in LAYERS[group]:
                    found.append(f"{where}:{line}: {group} may not import {imported} ({target})")
                if pure and target not in (FOUNDATION, group) and not (group == "config" and target == "crypto"):
                    found.append(f"{where}:{line}: pure core module {module} imports {imported}")
            elif pure and (imported in SHELL_MODULES or imported.split(".")[0] in SHELL_MODULES):
                found.append(f"{where}:{line}: pure core module {module} imports the shell module {imported}")
    return found


def test_every_import_follows_the_layers_and_the_pure_core_rule() -> None:
    assert violations(PACKAGE) == []


def test_the_live_view_package_is_part_of_the_web_layer() -> None:
    assert group_of("camrec.web.live.webrtc") == "web"
    assert (PACKAGE / "web" / "live" / "__init__.py").exists()


def test_the_layer_table_has_no_circle() -> None:
    order = list(LAYERS)
    for position, group in enumerate(order):
        assert LAYERS[group] <= set(order[:position]), f"{group} may import a later layer"


def test_every_package_says_what_it_is_and_what_it_may_import() -> None:
    for init in sorted(PACKAGE.rglob("__init__.py")):
        if init.parent == PACKAGE:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert doc, f"{init} has no docstring"
        assert "import" in doc.lower(), f"{init}: the docstring must say what the package may import"


def test_no_flat_motion_modules_left() -> None:
    assert not list(PACKAGE.glob("motion_*.py"))
    top_level = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top_level == ["__init__", "__main__", "cli", "clock", "errors", "printable", "redact", "source_spec",
                         "timeparse"]


@pytest.mark.parametrize(
    ("module", "planted", "expected"),
    [
        # the store reaching up into the owner's tools: the old audit/manifest circle
        ("store/manifest.py", "from camrec.owner.audit import Auditor\n", "store may not import camrec.owner.audit"),
        # crypto reaching into the daemon, lazily inside a function
        ("crypto/age.py", "def _x():\n    from camrec.service import daemon\n", "crypto may not import camrec.service"),
        # the pure clip policy growing a thread
        ("record/policy.py", "import threading\n", "pure core module camrec.record.policy imports the shell module"),
        # sources learning about the recorder ("from camrec import X" form)
        ("sources/capture.py", "from camrec.record import recorder\n", "sources may not import camrec.record"),
    ],
)
def test_a_planted_back_import_is_caught(tmp_path: Path, module: str, planted: str, expected: str) -> None:
    copy = tmp_path / "camrec"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "static", "node_modules"))
    assert violations(copy) == []
    with open(copy / module, "a", encoding="utf-8") as f:
        f.write("\n" + planted)
    found = violations(copy)
    assert len(found) >= 1 and all(module in v for v in found), found
    assert any(expected in v for v in found), found
