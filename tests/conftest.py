from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.support.camera"]


@pytest.fixture(autouse=True, scope="session")
def _audit_log_outside_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`camrec decrypt` of files outside a store writes the per-user audit log: keep the tests'
    entries (also those of camrec child processes, which inherit the variable) out of ~/.local."""
    old = os.environ.get("CAMREC_AUDIT_LOG")
    os.environ["CAMREC_AUDIT_LOG"] = str(tmp_path_factory.mktemp("audit") / "audit.jsonl")
    yield
    if old is None:
        os.environ.pop("CAMREC_AUDIT_LOG", None)
    else:
        os.environ["CAMREC_AUDIT_LOG"] = old


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="also run the long soak/fault tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long test: run with --long")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
