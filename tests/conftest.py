import os
import sys

import numpy as np
import pytest

# make tests/reference.py importable as `reference`
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
