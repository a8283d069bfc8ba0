"""Shared test setup.

Without a GPU, Triton kernels run through Triton's interpreter on CPU tensors. Triton reads
``TRITON_INTERPRET`` when a kernel is defined, so it is set here, before any test imports a kernel
module (``trilevelnas.ops.triton.*`` is imported lazily by the package).
"""
import os
import tempfile

import torch

# The teacher cache's default folder is the user's ~/.cache/trilevelnas/teacher: the tests (and
# the programs they start) use a private folder of their own instead.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="trilevelnas-test-cache-")

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _private_cache_per_test(tmp_path_factory, monkeypatch):
    """Each test gets an empty per-user cache folder (the teacher cache's default)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    on tiny convolutions OpenMP threads only add contention on a shared CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
