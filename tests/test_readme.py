"""Every Python block of the README runs, in order, as one script; CI runs its commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the tour writes runs/tour
    namespace: dict[str, object] = {}
    for block in _blocks("python"):
        exec(compile(block, str(README), "exec"), namespace)
    assert (tmp_path / "runs" / "tour" / "model.safetensors").is_file()


def test_ci_runs_the_readme_test_command() -> None:
    text = README.read_text()
    command = re.search(r"<!-- test-command -->\n```bash\n(.*?)\n```", text, re.S)
    assert command is not None
    ci = (README.parent / ".ci" / "run").read_text()
    assert "test-command" in ci  # .ci/run extracts and runs exactly that block
