"""One error tree, grouped by what the caller should do about it.

Every error has a stable ``code`` (shown to users and stored in the failures table)
and a ``hint`` saying what to try. CLI users see ``error[CODE]: message`` plus the hint
on one more line; exit codes follow the group (see :data:`EXIT_CODES`).

Groups (by remedy):
- :class:`InputError`: one source image is bad; recorded as a failure, the batch goes on.
- :class:`ConfigError`: a spec, manifest, path or option is wrong; fix it and rerun.
- :class:`ConflictError`: someone else changed the store; rerun (it resumes idempotently).
- :class:`StorageError`: the store cannot be read or written.
- :class:`DeviceError`: the GPU failed (out of memory, or a fault that leaves the CUDA context unusable);
  the job stops before its commit (nothing is stored), never blaming the images.
- :class:`InternalError`: a bug or an unexpected failure of a dependency.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable

from preprocess.core import names
from preprocess.core.codes import HINTS, ErrorCode


class PreprocessError(Exception):
    """Base of every error this package raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL
    hint: str = ""
    exit_code: int = 1

    def __init__(self, message: str, *, code: ErrorCode | None = None, hint: str | None = None,
                 path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is None and hint is None and path is None:  # rebuilt from a traceback's text (:func:`carry`)?
            code, hint, path, short = _carried(message)
            self.message = short or message  # the worker's traceback stays in ``args[0]``
        if code is not None:
            self.code = code
        if hint is not None:
            self.hint = hint
        elif not self.hint:
            self.hint = HINTS.get(self.code, "")
        self.path = path

    def one_line(self) -> str:
        """``path: message`` on one line, the path printed by :func:`preprocess.core.names.quote`."""
        where = f"{names.quote(self.path)}: " if self.path else ""
        return f"{where}{self.message}"

    def __str__(self) -> str:
        return self.one_line()


# A DataLoader worker's error reaches the main process as its type and its traceback's text, from which torch
# builds it again (``type(message)``): the code, hint and path it was raised with would be lost. The worker
# adds a note that carries them (:func:`carry`); the rebuilt error reads them back from the text, and its message
# is the worker's own (the rest of torch's text, the worker's whole traceback, stays in ``args[0]``).
CARRIED = "preprocess error: "


def carry[E: PreprocessError](exc: E) -> E:
    """``exc`` with a note (printed with its traceback) from which an error rebuilt from that text takes
    ``exc``'s code, hint and path."""
    if not any(n.startswith(CARRIED) for n in getattr(exc, "__notes__", ())):
        exc.add_note(CARRIED + json.dumps({"code": str(exc.code), "hint": exc.hint, "path": exc.path,
                                           "message": exc.message}))
    return exc


def _carried(message: str) -> tuple[ErrorCode | None, str | None, str | None, str | None]:
    """The code, hint, path and message a :func:`carry` note holds in the text torch rebuilds a worker's error
    from (``Caught StorageError in DataLoader worker process 0. Original Traceback ...``; the last note), the
    message ending with where it was raised; else Nones: any other message is taken as it is."""
    first = message.partition("\n")[0]
    rebuilt = first.startswith("Caught ") and "DataLoader worker" in first
    for line in reversed(message.splitlines() if rebuilt and CARRIED in message else []):
        if line.startswith(CARRIED):
            try:
                d = json.loads(line.removeprefix(CARRIED))
                code, hint, path = ErrorCode(d["code"]), str(d["hint"]), None if d["path"] is None else str(d["path"])
            except (ValueError, KeyError, TypeError):
                return None, None, None, None
            where = first.partition(" in ")[2].rstrip(".") or "a DataLoader worker"
            short = f"{d['message']} (raised in {where})" if isinstance(d.get("message"), str) else None
            return code, hint, path, short
    return None, None, None, None


class InputError(PreprocessError):
    """A source image cannot be used. Recorded as a failure row; the job goes on."""

    code = ErrorCode.INPUT
    exit_code = 0  # a recorded failure alone does not fail the job (see job exit codes)


class ConfigError(PreprocessError, ValueError):
    code = ErrorCode.CONFIG
    exit_code = 2


class NotFoundError(ConfigError, LookupError):
    """What was named is not there: a REF, an item, a page, a source, a store, a spec, a model. The web UI
    answers 404 for these (by type, never by code); the command line exits 2 like any ConfigError."""


class ConflictError(PreprocessError):
    code = ErrorCode.CONFLICT
    hint = "Another writer committed to this branch first; rerun the job (it skips what is stored)."
    exit_code = 4


class StorageError(PreprocessError, OSError):
    code = ErrorCode.STORAGE
    exit_code = 5


class DamagedError(StorageError):
    """A file of the dataset was changed on disk (a checksum, a decompression or a format check failed): what
    it holds cannot be read. STORE_IO, as any failed read; the type says it is the data, not the storage."""

    code = ErrorCode.STORE_IO
    hint = ("the dataset's files were changed on disk: `preprocess verify STORE` lists the rows it damaged; restore "
            "the files from a backup or copy (what a damaged file holds cannot be read)")


class DeviceError(PreprocessError, RuntimeError):
    """The accelerator failed, not an image: out of device memory (``DEVICE_OOM``) or a CUDA fault that
    poisons the process's context (``DEVICE_FAULT``: illegal address, launch failure, ECC, lost device).
    Raised out of the job so that nothing is committed; every image of the batch is still to do."""

    code = ErrorCode.DEVICE_FAULT
    hint = ("the GPU failed, not the images, and nothing was committed: check nvidia-smi (Xid/ECC errors), "
            "rerun the job (it resumes), or use --device cpu")
    exit_code = 6


OOM_HINT = ("the GPU ran out of memory and nothing was committed: rerun with a smaller [batch] size or fewer "
            "GPU lanes (PREPROCESS_GPU_LANES), stop other processes on the GPU, or use --device cpu")

# What CUDA, cuDNN/cuBLAS, nvJPEG, DALI, torch and onnxruntime print for device memory exhaustion ...
_OOM = ("out of memory", "cuda allocation failed", "cuda_error_out_of_memory", "cudaerrormemoryallocation",
        "nvjpeg_status_allocator_failure", "failed to allocate memory for requested buffer",
        "cudnn_status_alloc_failed", "cublas_status_alloc_failed")
# ... and for faults after which the CUDA context is unusable (sticky errors) or the device is gone.
_FAULT = ("illegal memory access", "illegal address", "cudaerrorillegaladdress", "unspecified launch failure",
          "cudaerrorlaunchfailure", "cuda_error_launch_failed", "device-side assert", "uncorrectable ecc",
          "cudaerroreccuncorrectable", "cuda_error_ecc_uncorrectable", "misaligned address",
          "illegal instruction", "hardware stack error", "cudaerrordevicesunavailable",
          "cuda-capable device is busy", "no cuda-capable device", "fallen off the bus",
          "cudaerrorinitializationerror", "cuda_error_not_initialized", "nvjpeg_status_execution_failed",
          "cublas_status_execution_failed", "cudnn_status_execution_failed", "cuda_error_illegal_address",
          "cudaerrorunknown", "cuda driver version is insufficient")


def device_fault(exc: BaseException) -> DeviceError | None:
    """The :class:`DeviceError` that ``exc`` (from CUDA, DALI, nvImageCodec, torch or onnxruntime) stands for,
    or None when it is not a device failure (e.g. an image the decoder rejects). Matched on the
    libraries' own messages and types, the cause chain included."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DeviceError):
            return seen
        text = f"{type(seen).__name__}: {seen}".lower()
        if "outofmemoryerror" in text or any(p in text for p in _OOM):
            return DeviceError(f"GPU out of memory: {first_line(seen)}", code=ErrorCode.DEVICE_OOM, hint=OOM_HINT)
        if any(p in text for p in _FAULT):
            return DeviceError(f"GPU fault: {first_line(seen)}")
        seen = seen.__cause__ or seen.__context__
    return None


def first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


class InternalError(PreprocessError, RuntimeError):
    code = ErrorCode.INTERNAL
    hint = "This is a bug or an unexpected failure of a dependency; please report it with the log."
    exit_code = 70


# The failure codes recorded in the dataset's failures table, by their old names.
EMPTY_FILE = ErrorCode.E_EMPTY
NOT_AN_IMAGE = ErrorCode.E_NOT_IMAGE
TRUNCATED = ErrorCode.E_TRUNCATED
CORRUPT = ErrorCode.E_CORRUPT
TOO_LARGE = ErrorCode.E_TOO_LARGE
UNSUPPORTED = ErrorCode.E_UNSUPPORTED
UNREADABLE = ErrorCode.E_UNREADABLE
GATE_REJECTED = ErrorCode.E_GATE_REJECTED
ENGINE_FAILED = ErrorCode.E_ENGINE
SYMLINK_OUTSIDE = ErrorCode.E_SYMLINK_OUTSIDE
NOT_A_FILE = ErrorCode.E_NOT_FILE

def failure_hint(code: str) -> str:
    """What to do about a failure row's code (a code stored as text; "" for one without a hint, or unknown)."""
    return HINTS.get(ErrorCode(code), "") if code in ErrorCode else ""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'main'?)"`` naming the closest of ``choices`` (difflib), or ``""``: appended to
    the message of an error about a misspelt name (a REF, a spec field, a column)."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def input_error(code: ErrorCode, message: str, path: str | None = None) -> InputError:
    return InputError(message, code=code, path=path)  # its hint: the code's (HINTS)


# Process exit codes of the CLI.
EXIT_OK = 0
EXIT_FAILURES = 3  # the job committed, but some images failed (recorded in the dataset)
EXIT_DEVICE = DeviceError.exit_code  # the GPU failed: nothing committed
EXIT_INTERRUPTED = 130  # SIGINT or SIGTERM (preprocess.core.interrupts): nothing committed, or the line says what
EXIT_CODES = {
    "ok": EXIT_OK,
    "internal": InternalError.exit_code,
    "config": ConfigError.exit_code,
    "failures": EXIT_FAILURES,
    "conflict": ConflictError.exit_code,
    "storage": StorageError.exit_code,
    "device": EXIT_DEVICE,
    "interrupted": EXIT_INTERRUPTED,
}
