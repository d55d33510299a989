import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _hermetic_cache(tmp_path_factory):
    """Tests train their own digits classifier into a fresh cache: nothing from ~/.cache."""
    old = os.environ.get("TENFOLD_CACHE")
    os.environ["TENFOLD_CACHE"] = str(tmp_path_factory.mktemp("tenfold-cache"))
    yield
    if old is None:
        os.environ.pop("TENFOLD_CACHE", None)
    else:
        os.environ["TENFOLD_CACHE"] = old


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
