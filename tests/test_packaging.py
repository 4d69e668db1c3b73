"""The package list in pyproject.toml names every package folder (an explicit list silently
drops a new subpackage from a normal install), and no top-level `cli` package is installed."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "inq_onnx").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml packages: {sorted(found - listed)}"
    assert "cli" not in listed and config["package-dir"]["inq_onnx_cli"] == "cli"
