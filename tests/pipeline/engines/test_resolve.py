"""The ``auto`` rules for engine and device (:func:`preprocess.pipeline.engines.resolve`)."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError
from preprocess.pipeline.engines import resolve
from tests.conftest import gpu_available
from tests.paths import ROOT


def driver_loads() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(driver_loads(), reason="a CUDA driver is installed here: auto may import DALI")
def test_auto_on_a_machine_without_a_cuda_driver_is_pillow_and_never_imports_dali() -> None:
    """Importing DALI only to count no GPUs cost every run and tune 0.7-3 s on CPU machines."""
    code = ("import sys; from preprocess.pipeline.engines import resolve; "
            "print(resolve('auto', 'auto'), 'nvidia.dali' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["('pillow',", "'cpu')", "False"]


@pytest.mark.skipif(gpu_available(), reason="a GPU is visible here")
def test_asking_for_a_gpu_where_there_is_none_is_a_clear_error() -> None:
    with pytest.raises(ConfigError) as e:
        resolve("dali", "gpu")
    assert e.value.code == ErrorCode.NO_GPU
    with pytest.raises(ConfigError) as e:
        resolve("pillow", "gpu")
    assert e.value.code == ErrorCode.ENGINE_DEVICE
    assert resolve("dali", "auto") == ("dali", "cpu")
