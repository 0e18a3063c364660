"""The README is a front page that stays true: every Python block runs (in order as one
script, and each alone, as a reader pastes it), CI runs its two commands, its command summary
names every flag the parser has, and its links lead somewhere."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 210  # a front page: what it is, the two commands, a tour, the commands, links
EVERY_COMMAND = {"-h", "--help", "--plugin", "--debug"}  # "Every command also takes ..."


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def _marked_block(marker: str) -> str:
    found = re.search(rf"<!-- {marker} -->\n```bash\n(.*?)\n```", README.read_text(), re.S)
    assert found is not None, f"no bash block after <!-- {marker} -->"
    return found.group(1)


def test_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the tour writes runs/tour
    namespace: dict[str, object] = {}
    for block in _blocks("python"):
        exec(compile(block, str(README), "exec"), namespace)
    assert (tmp_path / "runs" / "tour" / "model.safetensors").is_file()


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_each_python_block_runs_alone(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader pastes one block into a fresh interpreter: it brings its own imports."""
    monkeypatch.chdir(tmp_path)
    exec(compile(_blocks("python")[index], f"{README}, block {index + 1}", "exec"), {})


def test_ci_runs_the_readme_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "main-command" in ci and "test-command" in ci  # .ci/run extracts and evals both
    main = _marked_block("main-command")
    tests = _marked_block("test-command")
    # a virtual environment first: distributions that follow PEP 668 refuse a bare pip install
    assert main.startswith("python3 -m venv .venv && . .venv/bin/activate && ")
    assert "[dev]" not in main, "the main job needs the core install only"
    assert 'pip install -e ".[dev]"' in tests, "the test command installs what the tests need"
    assert "python -m pytest" in tests


def test_readme_is_a_front_page() -> None:
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= MAX_LINES, len(lines)
    # the two commands come on the first screen
    assert text.index("<!-- main-command -->") < text.index("## How it differs")
    assert "DESIGN" not in text  # the design notes are the docs' Architecture page
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), f"README links to a missing {target}"


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from pyro_vae.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")}


@pytest.mark.parametrize("page", ["README.md", "docs/command-line.rst"])
def test_command_summary_names_every_flag(page: str) -> None:
    """The synopsis omits no flag that ``pyro-vae COMMAND --help`` shows."""
    text = (ROOT / page).read_text()
    parsers = _parsers()
    for name, parser in parsers.items():
        lines = re.findall(rf"^\s*pyro-vae {name}\b.*(?:\n\s+\[.*)*", text, flags=re.M)
        assert lines, f"{page}: no synopsis of pyro-vae {name}"
        said = set(re.findall(r"--[a-z][a-z0-9-]*", "\n".join(lines)))
        wanted = _flags(parser) - EVERY_COMMAND
        if name == "compare":  # "[every train flag but --resume]"
            assert "every train flag but --resume" in "\n".join(lines)
            wanted -= _flags(parsers["train"]) - {"--resume"}
        missing = sorted(wanted - said)
        assert not missing, f"{page}: pyro-vae {name} synopsis lacks {missing}"
        unknown = sorted(said - _flags(parser) - ({"--resume"} if name == "compare" else set()))
        assert not unknown, f"{page}: pyro-vae {name} has no {unknown}"
    for flag in ("--plugin", "--debug"):
        assert f"``{flag}" in text or f"`{flag}" in text, f"{page}: {flag} is not mentioned"
