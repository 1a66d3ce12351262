import random
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    random.seed(0)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def device(request):
    return torch.device(request.param)


@pytest.fixture
def sst_dir():
    if not (DATA / "sst" / "train.txt").exists():
        pytest.skip("shared SST data not present")
    return DATA / "sst"


def pytest_configure(config):
    # small ops on a shared 2-core machine: extra threads only contend
    torch.set_num_threads(1)
