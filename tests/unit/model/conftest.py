import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
    yield
