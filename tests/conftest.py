"""Shared fixtures."""
import pytest
import torch

from sweeps import Background


@pytest.fixture(scope="module")
def one_thread():
    """One thread: fast on a shared CPU, and the same numbers on every run (modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The uninterrupted tiny sweep (tests/sweeps.py) that every fault test's rerun must equal;
    started once, in the background, the first time a test asks for it."""
    ref = Background(tmp_path_factory.mktemp("reference"))
    yield ref
    ref.stop()
