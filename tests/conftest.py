"""Test-session setup shared by all test files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# PYRO_VAE_DATA is usually given relative to the repository (``../shared/data``); pin it to
# an absolute path so that tests which change directory still find the data.
if os.environ.get("PYRO_VAE_DATA"):
    os.environ["PYRO_VAE_DATA"] = str(Path(os.environ["PYRO_VAE_DATA"]).resolve())


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny tensors: one torch thread avoids oversubscribing a shared machine (restored).

    Test files of many small computations use it for every test with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
