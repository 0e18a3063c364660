"""Test-session setup shared by all test files."""

from __future__ import annotations

import os
from pathlib import Path

# PYRO_VAE_DATA is usually given relative to the repository (``../shared/data``); pin it to
# an absolute path so that tests which change directory still find the data.
if os.environ.get("PYRO_VAE_DATA"):
    os.environ["PYRO_VAE_DATA"] = str(Path(os.environ["PYRO_VAE_DATA"]).resolve())
