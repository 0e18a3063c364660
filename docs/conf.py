"""Sphinx configuration of the pyro-vae documentation.

Build (offline, warnings are errors; also executes the tutorials)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Nothing is fetched at build time: no intersphinx, and MathJax is served from the files of
the ``sphinx-mathjax-offline`` package (copied into ``_static/mathjax``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyro_vae

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "pyro-vae"
author = "the pyro-vae developers"
copyright = "2026, the pyro-vae developers"
release = version = pyro_vae.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 from PyPI, served locally (no CDN)
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
    "pyro_vae_docs",  # generated API, components, configs, CLI and results pages
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "tutorials/README.rst"]
templates_path: list[str] = []

# -- cross references: nitpicky, with the libraries we cannot link offline named ---------
nitpicky = True
# Without intersphinx (offline builds), types from these packages have no target; a
# reference to anything else (pyro_vae's own names above all) must resolve.
_EXTERNAL = (
    r"torch(\..*)?|pyro(\..*)?|numpy(\..*)?|np\..*|matplotlib(\..*)?|arviz(\..*)?|"
    r"argparse\..*|importlib\..*|pathlib\..*|collections\..*|typing(_extensions)?\..*|"
    r"dataclasses\..*|os\..*|enum\..*|abc\..*|types\..*|contextlib\..*|logging\..*|"
    r"threading\..*|concurrent\..*|subprocess\..*|io\..*|json\..*|random\..*|"
    r"sklearn(\..*)?|safetensors(\..*)?|tqdm(\..*)?|Tensor|Path|nn\..*|dist\..*|"
    r"pandas(\..*)?|pd\..*|ast|_frozen_importlib\..*|constriction(\..*)?|scipy(\..*)?|"
    r"Distribution|Trace|Messenger|TorchDistribution|Figure|Axes|ndarray|"
    r"(int|float|str|bool|bytes|object|None|type|list|dict|tuple|set|frozenset|"
    r"callable|Callable|Iterator|Iterable|Sequence|Mapping|Any|T|ValueError|TypeError|"
    r"RuntimeError|OSError|Exception|BaseException|KeyboardInterrupt)"
)
nitpick_ignore_regex = [
    (r"py:.*", _EXTERNAL + r"|ArrayLike|numpy\.typing\..*"),
    # private base classes named by "Bases:" and type variables are not documented
    (r"py:.*", r"pyro_vae\..*\._\w+|pyro_vae\.\w+\.T"),
    # the record Registry.entry returns; internal (not in registry.__all__), so not documented
    (r"py:class", r"pyro_vae\.registry\.Entry"),
]

# -- autodoc ------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "separated"
autodoc_default_options = {"exclude-members": "__init__, forward, training, dump_patches"}
autodoc_inherit_docstrings = False  # torch/pyro docstrings are not ours to render

# -- math ---------------------------------------------------------------------------------
# sphinx-mathjax-offline sets mathjax_path to its local copy; MathJax's own config:
mathjax3_config = {"tex": {"macros": {"KL": r"\operatorname{KL}", "E": r"\mathbb{E}"}}}

# -- doctest: every testcode/doctest block in the pages runs under `-b doctest` -----------
doctest_global_setup = """
import pyro
import torch
pyro.clear_param_store()
pyro.set_rng_seed(0)
torch.set_num_threads(1)
"""

# -- tutorials gallery (sphinx-gallery): every tutorial_*.py is executed ------------------
sphinx_gallery_conf = {
    "examples_dirs": "tutorials",
    "gallery_dirs": "generated/tutorials",
    "filename_pattern": r"/tutorial_",  # executed: every tutorial_*.py, its figures captured
    "ignore_pattern": r"(__init__|conftest)\.py",
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib", "pyro_vae_docs.reset_pyro"),
    "abort_on_example_error": True,  # a failing tutorial fails the build
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    # no sg_execution_times pages: sphinx-gallery writes them with Bootstrap from a CDN,
    # and no page of this site may load anything remote (the render test checks every page)
    "write_computation_times": False,
    "backreferences_dir": None,
    "promote_jupyter_magic": False,
}

# -- MyST (the results pages include benchmarks/*.md) -------------------------------------
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

# -- HTML ---------------------------------------------------------------------------------
html_theme = "sphinx_rtd_theme"  # Pyro's own docs theme
html_title = f"pyro-vae {release}"
html_static_path = ["_static"]
html_css_files = ["wrap-tables.css"]  # table cells wrap instead of running off the page
html_favicon = "_static/favicon.svg"  # a local icon: no request for a missing /favicon.ico
html_show_sourcelink = True
html_theme_options = {"navigation_depth": 3, "collapse_navigation": False}
