import pytest

from sweeps import Background


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The uninterrupted tiny sweep (tests/sweeps.py) that every fault test's rerun must equal;
    started once, in the background, the first time a test asks for it."""
    ref = Background(tmp_path_factory.mktemp("reference"))
    yield ref
    ref.stop()
