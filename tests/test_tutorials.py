"""The tutorials' shape, without running them (the docs build executes every tutorial).

Checks what the build would not: each tutorial exists under its agreed file name, opens
with an RST title that sphinx-gallery reads, is split into ``# %%`` cells, has the epoch
knob, and every API cross-reference (``:func:`pyro_vae...```) names a real object.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
TITLES = {
    "tutorial_1_probabilistic_program.py": "The VAE as a probabilistic program",
    "tutorial_2_priors_likelihoods.py": "Swapping priors and likelihoods",
    "tutorial_3_objectives.py": "Comparing variational objectives",
    "tutorial_4_evaluation.py": "Evaluating a VAE honestly",
    "tutorial_5_your_own_model.py": "Using it in your own model",
    "tutorial_6_tables.py": "Synthetic tables and imputation",
    "tutorial_7_compression.py": "A VAE is a compressor",
    "tutorial_8_semi_supervised.py": "Semi-supervised learning with enumeration",
}
ROLE = re.compile(r":(?:func|class|mod|meth|attr):`~?(pyro_vae[\w.]*)`")


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and get the rest as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


def test_the_tutorials_and_nothing_else() -> None:
    assert sorted(p.name for p in TUTORIALS.glob("tutorial_*.py")) == sorted(TITLES)


@pytest.mark.parametrize("name", sorted(TITLES))
def test_tutorial_shape(name: str) -> None:
    text = (TUTORIALS / name).read_text(encoding="utf-8")
    tree = ast.parse(text)
    doc = ast.get_docstring(tree, clean=True)
    assert doc is not None, f"{name}: no module docstring"
    lines = doc.splitlines()
    assert lines[0] == TITLES[name], f"{name}: title {lines[0]!r}"
    assert lines[1] == "=" * len(lines[0]), f"{name}: the title's underline must match it"
    cells = text.count("\n# %%\n")
    assert cells >= 3, f"{name}: {cells} '# %%' cells"
    assert 'os.environ.get("PYRO_VAE_TUTORIAL_EPOCHS"' in text, f"{name}: no epoch knob"


@pytest.mark.parametrize("name", sorted(TITLES))
def test_api_references_exist(name: str) -> None:
    text = (TUTORIALS / name).read_text(encoding="utf-8")
    targets = ROLE.findall(text)
    for target in targets:
        try:
            obj = _resolve(target)
        except (AttributeError, ModuleNotFoundError) as error:
            pytest.fail(f"{name}: :...:`{target}` names nothing ({error})")
        assert obj is not None
        assert not target.split(".")[-1].startswith("_"), f"{name}: private {target}"
