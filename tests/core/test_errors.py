"""Device failures are told apart from bad images by what the libraries say (messages as they print them)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from preprocess.core.codes import MEANINGS, ErrorCode, table
from preprocess.core.errors import (
    CARRIED,
    EXIT_CODES,
    ConfigError,
    DeviceError,
    InputError,
    NotFoundError,
    StorageError,
    carry,
    device_fault,
)
from tests.paths import ROOT

OOM = [
    "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 139.81 GiB total capacity; 137.1 GiB already allocated)",
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Conv node. Name:'/f/0'"
    " Status Message: bfc_arena.cc:359 AllocateRawInternal Failed to allocate memory for requested buffer of size 8",
    "Critical error in pipeline:\nError in MIXED operator `nvidia.dali.fn.decoders.image`,\nCUDA allocation failed",
    "CUDA runtime API error cudaErrorMemoryAllocation (2):\nout of memory",
    "nvJPEG error (NVJPEG_STATUS_ALLOCATOR_FAILURE)",
]
FAULTS = [
    "CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be asynchronously reported",
    "CUDA failure 700: an illegal memory access was encountered ; GPU=0 ; expr=cudaStreamSynchronize(stream)",
    "CUDA error: unspecified launch failure",
    "CUDA error: uncorrectable ECC error encountered",
    "CUDA driver error: CUDA_ERROR_ILLEGAL_ADDRESS",
    "Error in thread 0: nvJPEG error (NVJPEG_STATUS_EXECUTION_FAILED)",
    "CUDA error: device-side assert triggered",
]
IMAGES = [
    "Error in thread 0: nvJPEG error (NVJPEG_STATUS_BAD_JPEG): Bad JPEG",
    "Assert on \"CanDecode(...)\" failed: Unrecognized image format. Supported formats are: JPEG, PNG, BMP, TIFF",
    "cannot decode: broken data stream when reading image file",
    "DALI could not view a candidate: Image shape is invalid",
]


@pytest.mark.parametrize("message", OOM)
def test_out_of_device_memory_is_a_device_error(message: str) -> None:
    got = device_fault(RuntimeError(message))
    assert isinstance(got, DeviceError) and got.code == "DEVICE_OOM"
    assert "batch" in got.hint and "--device cpu" in got.hint
    assert got.exit_code == EXIT_CODES["device"] == 6


@pytest.mark.parametrize("message", FAULTS)
def test_sticky_cuda_errors_are_device_faults(message: str) -> None:
    got = device_fault(RuntimeError(message))
    assert isinstance(got, DeviceError) and got.code == "DEVICE_FAULT"
    assert got.message.startswith("GPU fault: ")


@pytest.mark.parametrize("message", IMAGES)
def test_an_images_own_failure_is_not_a_device_error(message: str) -> None:
    assert device_fault(RuntimeError(message)) is None


def test_the_cause_chain_and_types_count() -> None:
    class OutOfMemoryError(RuntimeError):  # torch.cuda.OutOfMemoryError's name, without importing torch for it
        pass

    assert device_fault(OutOfMemoryError("")) is not None
    outer = ValueError("the batch failed")
    outer.__cause__ = RuntimeError("CUDA error: an illegal memory access was encountered")
    assert device_fault(outer) is not None
    err = DeviceError("x")
    assert device_fault(err) is err
    assert device_fault(MemoryError()) is None  # the host's memory: not the GPU
    assert not isinstance(DeviceError("x"), InputError)  # never recorded as an image's failure


def test_error_codes_only_grow_and_the_readme_lists_them() -> None:
    """The enum keeps every code ever shipped, in order (new ones go at the end, and into
    tests/data/error_codes.txt), and README's table is generated from it."""
    shipped = (ROOT / "tests" / "data" / "error_codes.txt").read_text().split()
    assert [str(c) for c in ErrorCode][: len(shipped)] == shipped
    assert set(MEANINGS) == set(ErrorCode) and all(MEANINGS.values())
    assert table() in (ROOT / "README.md").read_text()
    assert ErrorCode.STORE_FULL == "STORE_FULL" and f"{ErrorCode.E_CORRUPT}" == "E_CORRUPT"  # plain strings


def test_no_free_error_code_literals_in_the_package() -> None:
    """Every ``code=`` given to an error names an ErrorCode member, never a string."""
    free = []
    for path in (ROOT / "preprocess").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "code" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                        free.append(f"{path.relative_to(ROOT)}:{kw.value.lineno}: {kw.value.value}")
    assert free == []


def test_not_found_is_a_type() -> None:
    exc = NotFoundError("no branch 'x'", code=ErrorCode.BRANCH_MISSING)
    assert isinstance(exc, ConfigError) and isinstance(exc, LookupError) and exc.exit_code == 2
    assert str(exc) == "no branch 'x'"  # not KeyError's quoted repr


def test_only_the_text_torch_rebuilds_a_workers_error_from_gives_back_its_code() -> None:
    """An error raised in a DataLoader worker carries its code, hint and path in a note (`carry`); torch rebuilds
    it in the main process from its type and traceback text, and the note is read back from there only: a
    message of any other shape holding such a line (a file's contents, a user's text) changes nothing."""
    note = CARRIED + json.dumps({"code": "STORE_IO", "hint": "check the disk", "path": "/data/s.icechunk",
                                 "message": "a chunk is damaged"})
    text = f"Caught StorageError in DataLoader worker process 0.\nOriginal Traceback ...\n{note}\n"
    rebuilt = StorageError(text)
    assert (rebuilt.code, rebuilt.hint, rebuilt.path) == ("STORE_IO", "check the disk", "/data/s.icechunk")
    # its message is the worker's own, not torch's whole traceback (which stays in args)
    assert str(rebuilt) == "/data/s.icechunk: a chunk is damaged (raised in DataLoader worker process 0)"
    assert rebuilt.args == (text,)
    plain = InputError(f"a file that said:\n{note}")
    assert (plain.code, plain.path) == ("INPUT", None)
    odd = StorageError(f"Caught StorageError in DataLoader worker process 0.\n{CARRIED}{{not json")
    assert odd.code == "STORAGE"
    once = CARRIED + json.dumps({"code": "STORE_IO", "hint": "", "path": None, "message": "x"})
    assert carry(carry(StorageError("x", code=ErrorCode.STORE_IO))).__notes__ == [once]  # however often carried


def test_codes_whose_raises_share_a_hint_get_it_wherever_raised(tmp_path: Path) -> None:
    """A newcomer's walkthrough (session 7): SPEC_SYNTAX, WATCH_OPTION, TUNE_GRID, TUNE_MODEL and EXPORT_IO were
    printed without a hint, where README says every error has one. A hint given at the raise still wins."""
    from preprocess.core.codes import HINTS
    from preprocess.pipeline.spec import load_spec
    from preprocess.tune.sweep import check_grid

    for code, hint in HINTS.items():
        assert ConfigError("x", code=code).hint == hint and StorageError("x", code=code).hint == hint
    assert ConfigError("x", code=ErrorCode.WATCH_OPTION, hint="mine").hint == "mine"
    bad = tmp_path / "bad.toml"
    bad.write_text("[resize\nsize = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_spec(bad)
    assert caught.value.code == "SPEC_SYNTAX" and "line and column" in caught.value.hint
    with pytest.raises(ConfigError) as caught:
        check_grid([1280], list(range(5, 201, 2)))
    assert caught.value.message == "qualities must be 1..100, got 101, 103, 105, 107 and 46 more"
    assert caught.value.hint
