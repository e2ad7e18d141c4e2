"""Every stable code an error or a failure row carries, and what each one means.

The codes are an append-only :class:`ErrorCode` (a ``str``: stored in failure rows, printed as
``error[CODE]``, compared with plain strings); :data:`MEANINGS` says in one line what each means, and
:func:`table` is the README's table of them.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every stable code an error or a failure row carries. Append only: a code is never renamed, reused or
    removed (stored failure rows and users' scripts hold them; ``tests/core/test_errors.py`` pins the
    order). README's table of codes is :func:`table` (a test checks it)."""

    # the groups' own codes (an error raised without a more precise one)
    INTERNAL = "INTERNAL"
    CONFIG = "CONFIG"
    CONFLICT = "CONFLICT"
    STORAGE = "STORAGE"
    INPUT = "INPUT"
    DEVICE_FAULT = "DEVICE_FAULT"
    DEVICE_OOM = "DEVICE_OOM"
    # one source image: recorded as a failure row, the job goes on
    E_EMPTY = "E_EMPTY"
    E_NOT_IMAGE = "E_NOT_IMAGE"
    E_TRUNCATED = "E_TRUNCATED"
    E_CORRUPT = "E_CORRUPT"
    E_TOO_LARGE = "E_TOO_LARGE"
    E_UNSUPPORTED = "E_UNSUPPORTED"
    E_UNREADABLE = "E_UNREADABLE"
    E_GATE_REJECTED = "E_GATE_REJECTED"
    E_ENGINE = "E_ENGINE"
    E_SYMLINK_OUTSIDE = "E_SYMLINK_OUTSIDE"
    E_NOT_FILE = "E_NOT_FILE"
    # the command line, the environment, the installation
    CLI_USAGE = "CLI_USAGE"
    ENV_INVALID = "ENV_INVALID"
    INSTALL_BROKEN = "INSTALL_BROKEN"
    NO_SOURCES = "NO_SOURCES"
    SOURCE_MISSING = "SOURCE_MISSING"
    S3_CONFIG = "S3_CONFIG"
    # specs, engines, models
    SPEC_MISSING = "SPEC_MISSING"
    SPEC_UNREADABLE = "SPEC_UNREADABLE"
    SPEC_SYNTAX = "SPEC_SYNTAX"
    SPEC_EMPTY = "SPEC_EMPTY"
    SPEC_INVALID = "SPEC_INVALID"
    ENGINE_UNKNOWN = "ENGINE_UNKNOWN"
    ENGINE_DEVICE = "ENGINE_DEVICE"
    DALI_DECODE = "DALI_DECODE"
    NO_GPU = "NO_GPU"
    ORT_NO_CUDA = "ORT_NO_CUDA"
    MODEL_UNKNOWN = "MODEL_UNKNOWN"
    MODEL_MANIFEST = "MODEL_MANIFEST"
    MODEL_PACKAGE = "MODEL_PACKAGE"
    MODEL_MISSING = "MODEL_MISSING"
    MODEL_HASH = "MODEL_HASH"
    MODEL_DIM = "MODEL_DIM"
    MODEL_CACHE = "MODEL_CACHE"
    EMBEDDING_DIM = "EMBEDDING_DIM"
    # the store
    STORE_PATH = "STORE_PATH"
    STORE_URL = "STORE_URL"
    STORE_MISSING = "STORE_MISSING"
    STORE_FOREIGN = "STORE_FOREIGN"
    STORE_FORMAT = "STORE_FORMAT"
    STORE_LOCKED = "STORE_LOCKED"
    STORE_FULL = "STORE_FULL"
    STORE_IO = "STORE_IO"
    STORE_CLOSED = "STORE_CLOSED"
    STORE_ALIGN = "STORE_ALIGN"
    STORE_REGION = "STORE_REGION"
    STORE_ROW = "STORE_ROW"
    STORE_FIELD = "STORE_FIELD"
    STORE_MODEL_NAME = "STORE_MODEL_NAME"
    STORE_NO_MODEL = "STORE_NO_MODEL"
    COMMIT_CONFLICT = "COMMIT_CONFLICT"
    COMMIT_METADATA = "COMMIT_METADATA"
    PANDAS_MISSING = "PANDAS_MISSING"
    # refs and history
    REF_MISSING = "REF_MISSING"
    REF_AMBIGUOUS = "REF_AMBIGUOUS"
    REF_NAME = "REF_NAME"
    REF_EXISTS = "REF_EXISTS"
    REF_CONFLICT = "REF_CONFLICT"
    BRANCH_MISSING = "BRANCH_MISSING"
    BRANCH_MAIN = "BRANCH_MAIN"
    BRANCH_BUSY = "BRANCH_BUSY"
    TAG_MISSING = "TAG_MISSING"
    ITEM_MISSING = "ITEM_MISSING"
    GC_AGE = "GC_AGE"
    EXPORT_DIR = "EXPORT_DIR"
    EXPORT_IO = "EXPORT_IO"
    EXPORT_PATH = "EXPORT_PATH"
    EXPORT_FORMAT = "EXPORT_FORMAT"
    EXPORT_EMPTY = "EXPORT_EMPTY"
    # the watch daemon
    WATCH_FOLDER = "WATCH_FOLDER"
    WATCH_OPTION = "WATCH_OPTION"
    WATCH_ENGINE = "WATCH_ENGINE"
    METRICS_ADDRESS = "METRICS_ADDRESS"
    # Ray
    RAY_MISSING = "RAY_MISSING"
    RAY_ADDRESS = "RAY_ADDRESS"
    RAY_NO_GPU = "RAY_NO_GPU"
    RAY_RESOURCES = "RAY_RESOURCES"
    RAY_LOCAL_STORE = "RAY_LOCAL_STORE"
    RAY_FINGERPRINT = "RAY_FINGERPRINT"
    RAY_JOB = "RAY_JOB"
    RAY_ROW = "RAY_ROW"
    RAY_ROWS = "RAY_ROWS"
    RAY_REGION = "RAY_REGION"
    # tune
    SAMPLE_EMPTY = "SAMPLE_EMPTY"
    TUNE_GRID = "TUNE_GRID"
    TUNE_FORMAT = "TUNE_FORMAT"
    TUNE_MODEL = "TUNE_MODEL"
    TUNE_VIEW = "TUNE_VIEW"
    TUNE_TARGET = "TUNE_TARGET"
    TUNE_RESIZE = "TUNE_RESIZE"
    TARGET_UNREACHABLE = "TARGET_UNREACHABLE"
    # the PyTorch reader
    TORCH_DECODE = "TORCH_DECODE"
    TORCH_TRANSFORM = "TORCH_TRANSFORM"
    TORCH_SIZE = "TORCH_SIZE"
    TORCH_FORK = "TORCH_FORK"
    # the web UI
    SERVE_OPTION = "SERVE_OPTION"
    SERVE_LISTEN = "SERVE_LISTEN"
    SERVE_PARAM = "SERVE_PARAM"
    SERVE_NOT_FOUND = "SERVE_NOT_FOUND"
    SERVE_TOO_LARGE = "SERVE_TOO_LARGE"
    SERVE_INTERNAL = "SERVE_INTERNAL"
    SOURCE_UNAVAILABLE = "SOURCE_UNAVAILABLE"
    # selecting rows (`ls --where`, the web UI's search)
    WHERE_INVALID = "WHERE_INVALID"
    WATCH_FOLDER_BUSY = "WATCH_FOLDER_BUSY"
    # tune
    TUNE_REPORT = "TUNE_REPORT"


# What each code means, in one line (README's table; the hint at the raise site says what to do).
MEANINGS: dict[ErrorCode, str] = {
    ErrorCode.INTERNAL: "a bug or an unexpected failure of a dependency (exit 70); report it with the log",
    ErrorCode.CONFIG: "a spec, manifest, path or option is wrong (exit 2)",
    ErrorCode.CONFLICT: "another writer changed the store first (exit 4); rerun, it resumes",
    ErrorCode.STORAGE: "the store cannot be read or written (exit 5)",
    ErrorCode.INPUT: "one source image cannot be used; recorded as a failure row",
    ErrorCode.DEVICE_FAULT: "the GPU failed (Xid, ECC, illegal address); nothing was committed (exit 6)",
    ErrorCode.DEVICE_OOM: "the GPU ran out of memory; nothing was committed (exit 6)",
    ErrorCode.E_EMPTY: "the source file has zero bytes",
    ErrorCode.E_NOT_IMAGE: "the source's bytes are not a known image format",
    ErrorCode.E_TRUNCATED: "the source ends early (still being written, or cut off)",
    ErrorCode.E_CORRUPT: "the source's image data is damaged; its pixels would be wrong",
    ErrorCode.E_TOO_LARGE: "the source has more pixels than limits.max_pixels",
    ErrorCode.E_UNSUPPORTED: "a known image format this build cannot decode",
    ErrorCode.E_UNREADABLE: "the source cannot be read (permissions, I/O)",
    ErrorCode.E_GATE_REJECTED: "even the top quality failed the feature gate (gate.on_fail = reject)",
    ErrorCode.E_ENGINE: "the engine failed on this image alone",
    ErrorCode.E_SYMLINK_OUTSIDE: "a link that leads outside the input folders (see --follow-symlinks)",
    ErrorCode.E_NOT_FILE: "not a regular file (FIFO, socket, device): never read, so no read can block",
    ErrorCode.CLI_USAGE: "the command line is wrong: a missing or unknown argument, option or command, a bad value, or "
                        "arguments that contradict each other",
    ErrorCode.ENV_INVALID: "an environment variable (PREPROCESS_*) has an unusable value",
    ErrorCode.INSTALL_BROKEN: "a folder the package ships (models, pipelines) is missing: reinstall",
    ErrorCode.NO_SOURCES: "the inputs hold no image files: nothing to do",
    ErrorCode.SOURCE_MISSING: "an input folder or object prefix cannot be listed",
    ErrorCode.S3_CONFIG: "the AWS configuration (profile, credentials file, endpoint) cannot be used",
    ErrorCode.SPEC_MISSING: "the pipeline spec file does not exist",
    ErrorCode.SPEC_UNREADABLE: "the pipeline spec cannot be read",
    ErrorCode.SPEC_SYNTAX: "the pipeline spec is not valid TOML",
    ErrorCode.SPEC_EMPTY: "the pipeline spec is empty (it would silently be all defaults)",
    ErrorCode.SPEC_INVALID: "a field of the pipeline spec is wrong (the message names each one)",
    ErrorCode.ENGINE_UNKNOWN: "an unknown --engine or --device",
    ErrorCode.ENGINE_DEVICE: "the engine cannot run on that device (pillow on the GPU, DALI without DALI's GPU)",
    ErrorCode.DALI_DECODE: "DALI could not decode a stored image of a reader batch",
    ErrorCode.NO_GPU: "a GPU was asked for, but no CUDA device is visible",
    ErrorCode.ORT_NO_CUDA: "onnxruntime has no CUDA provider on this machine",
    ErrorCode.MODEL_UNKNOWN: "no bundled model or manifest file by that name",
    ErrorCode.MODEL_MANIFEST: "a model manifest cannot be read or is invalid",
    ErrorCode.MODEL_PACKAGE: "the package that ships a model's weights is not installed",
    ErrorCode.MODEL_MISSING: "a model's ONNX file is not where its manifest says",
    ErrorCode.MODEL_HASH: "a model's weights do not have the sha256 its manifest names",
    ErrorCode.MODEL_DIM: "a model gives features of another size than its manifest's output.dim",
    ErrorCode.MODEL_CACHE: "the model cache folder cannot be created",
    ErrorCode.EMBEDDING_DIM: "a row's embedding has another size than the dataset stores for its model",
    ErrorCode.STORE_PATH: "the dataset location is empty or not usable",
    ErrorCode.STORE_URL: "not an s3://bucket/prefix URL",
    ErrorCode.STORE_MISSING: "there is no dataset at that location",
    ErrorCode.STORE_FOREIGN: "the location holds something that is not a dataset; nothing there was changed",
    ErrorCode.STORE_FORMAT: "an icechunk repository that preprocess did not write",
    ErrorCode.STORE_LOCKED: "another job or daemon is writing the dataset (exit 4)",
    ErrorCode.STORE_FULL: "no space left on the disk or quota; the store is at its last commit (exit 5)",
    ErrorCode.STORE_IO: "a storage call failed; the store is at its last commit (exit 5)",
    ErrorCode.STORE_CLOSED: "a writer was used after it was closed (a bug)",
    ErrorCode.STORE_ALIGN: "rows were reserved off a chunk boundary (a bug)",
    ErrorCode.STORE_REGION: "a block of rows does not fit the arrays (a bug)",
    ErrorCode.STORE_ROW: "a row field does not fit its column (a bug)",
    ErrorCode.STORE_FIELD: "an unknown field or column name was asked for",
    ErrorCode.STORE_MODEL_NAME: "a model name that cannot name an embedding array",
    ErrorCode.STORE_NO_MODEL: "the dataset has no embeddings for that model",
    ErrorCode.COMMIT_CONFLICT: "the branch changed while the job was writing; nothing was committed (exit 4)",
    ErrorCode.COMMIT_METADATA: "a commit's provenance is not plain JSON (a bug)",
    ErrorCode.PANDAS_MISSING: "to_pandas() needs pandas: pip install 'preprocess[notebook]'",
    ErrorCode.REF_MISSING: "no branch, tag or snapshot by that name",
    ErrorCode.REF_AMBIGUOUS: "a snapshot id prefix that matches several snapshots",
    ErrorCode.REF_NAME: "not a usable branch or tag name",
    ErrorCode.REF_EXISTS: "a branch or tag by that name exists already",
    ErrorCode.REF_CONFLICT: "the dataset's refs changed meanwhile; rerun",
    ErrorCode.BRANCH_MISSING: "no branch by that name",
    ErrorCode.BRANCH_MAIN: "the main branch cannot be deleted",
    ErrorCode.BRANCH_BUSY: "the branch is being written by a job or daemon: not deleted",
    ErrorCode.TAG_MISSING: "no tag by that name",
    ErrorCode.ITEM_MISSING: "no item by that number, path or digest in the version",
    ErrorCode.GC_AGE: "not an age (30d, 12h, 90m, 45s, 2w)",
    ErrorCode.EXPORT_DIR: "the export folder is not a new or empty folder",
    ErrorCode.EXPORT_IO: "the export folder cannot be written",
    ErrorCode.EXPORT_PATH: "an export file would land outside the export folder: refused",
    ErrorCode.EXPORT_FORMAT: "an unknown manifest format (csv or parquet)",
    ErrorCode.EXPORT_EMPTY: "the version holds no images to export",
    ErrorCode.WATCH_FOLDER: "the watched folder does not exist, is not a folder, or is not local",
    ErrorCode.WATCH_OPTION: "a watch option has an unusable value",
    ErrorCode.WATCH_ENGINE: "the engine failed on every file of several batches in a row: the daemon stops",
    ErrorCode.METRICS_ADDRESS: "the daemon's --metrics address cannot be listened on",
    ErrorCode.RAY_MISSING: "--ray needs Ray: pip install 'preprocess[ray]'",
    ErrorCode.RAY_ADDRESS: "--ray is not local, auto or a cluster address",
    ErrorCode.RAY_NO_GPU: "--device gpu, but the Ray cluster has no GPUs",
    ErrorCode.RAY_RESOURCES: "unusable Ray resource options",
    ErrorCode.RAY_LOCAL_STORE: "a local dataset path with a multi-node Ray cluster",
    ErrorCode.RAY_FINGERPRINT: "a Ray worker's spec or model differs from the driver's",
    ErrorCode.RAY_JOB: "the Ray job failed; nothing was committed",
    ErrorCode.RAY_ROW: "a Ray worker returned something that is not a row (a bug)",
    ErrorCode.RAY_ROWS: "a Ray batch returned another number of rows than sources (a bug)",
    ErrorCode.RAY_REGION: "a Ray write task got rows that are not whole chunks (a bug)",
    ErrorCode.SAMPLE_EMPTY: "tune's sample holds no readable image",
    ErrorCode.TUNE_GRID: "tune's sizes or qualities are out of range",
    ErrorCode.TUNE_FORMAT: "a format that is not stored, or was not swept",
    ErrorCode.TUNE_MODEL: "a model that was not in the sweep",
    ErrorCode.TUNE_VIEW: "a view that the sweep did not measure",
    ErrorCode.TUNE_TARGET: "an unusable target or percentile",
    ErrorCode.TUNE_RESIZE: "tune sweeps sizes, but the spec's resize.mode has no size",
    ErrorCode.TARGET_UNREACHABLE: "no measured setting meets the target (the report says what came closest)",
    ErrorCode.TORCH_DECODE: "decode is not auto, cpu, gpu or none",
    ErrorCode.TORCH_TRANSFORM: "a transform (PIL) with decode='gpu'",
    ErrorCode.TORCH_SIZE: "size is not (width, height) >= 1, or fit is not crop or stretch",
    ErrorCode.TORCH_FORK: "a DataLoader worker was forked from a process that had loaded icechunk: use loader()",
    ErrorCode.SERVE_OPTION: "a serve option has an unusable value",
    ErrorCode.SERVE_LISTEN: "serve cannot listen on that host and port",
    ErrorCode.SERVE_PARAM: "a bad query parameter in a page's address",
    ErrorCode.SERVE_NOT_FOUND: "no page at that address",
    ErrorCode.SERVE_TOO_LARGE: "a stored image too large to show in the browser",
    ErrorCode.SERVE_INTERNAL: "a page failed (a bug); the log has the traceback",
    ErrorCode.SOURCE_UNAVAILABLE: "the source of a stored image is gone or changed: no comparison",
    ErrorCode.WHERE_INVALID: "a --where (or search) expression cannot be read: field, operator or value",
    ErrorCode.WATCH_FOLDER_BUSY: "another watch daemon takes files from the folder and one of them moves them (exit 4)",
    ErrorCode.TUNE_REPORT: "tune --from names no report.json this version of tune wrote",
}


# What to do, for codes whose every raise site would give the same hint: an error of one of these codes raised
# without a hint of its own gets this one (:class:`~preprocess.core.errors.PreprocessError`), and a failure row
# of a source is shown with its code's (``preprocess.core.errors.failure_hint``).
HINTS: dict[ErrorCode, str] = {
    ErrorCode.E_EMPTY: "the file has zero bytes; the writer may have failed",
    ErrorCode.E_NOT_IMAGE: "its first bytes match no image format (a text or HTML error page, an archive, a partial "
                           "download under an image name?): look at it with `file PATH`; supported: JPEG, PNG, TIFF, "
                           "WebP, JPEG 2000, AVIF, JPEG XL, BMP, GIF, PPM/PGM",
    ErrorCode.E_TRUNCATED: "the file ends early; it may still be being written or was cut off",
    ErrorCode.E_CORRUPT: "the image data is damaged (the decoder reported it; its pixels would be wrong)",
    ErrorCode.E_TOO_LARGE: "raise limits.max_pixels in the spec if images this large are expected",
    ErrorCode.E_UNSUPPORTED: "supported here: JPEG, PNG, TIFF (uncompressed, LZW, Deflate, JPEG, PackBits, ZSTD, "
                             "...), WebP, JPEG 2000, AVIF, JPEG XL, BMP, GIF, PPM/PGM; convert the image to one of "
                             "them",
    ErrorCode.E_UNREADABLE: "check that the file is there and readable (its permissions; a link: that what it leads "
                            "to exists)",
    ErrorCode.E_GATE_REJECTED: "even the top quality failed the feature gate; see gate.on_fail in the spec",
    ErrorCode.E_ENGINE: "the engine failed on this image alone; try --engine pillow",
    ErrorCode.E_SYMLINK_OUTSIDE: "links are followed only while they stay inside the input folders; copy the file "
                                 "in, or pass --follow-symlinks to follow links anywhere",
    ErrorCode.E_NOT_FILE: "only regular files are read: FIFOs, sockets and devices are refused, so that no read can "
                          "block",
    ErrorCode.SPEC_SYNTAX: "fix the TOML at the line and column named (pipelines/camera.toml is a documented example)",
    ErrorCode.WATCH_OPTION: "see `preprocess watch --help` for each option's form",
    ErrorCode.TUNE_GRID: "e.g. --sizes 1280,640 --qualities 30..90/10 (sizes 16..65535 px, qualities 1..100)",
    ErrorCode.TUNE_MODEL: "name a model the sweep measured (report.json's models); `preprocess tune SAMPLE "
                          "--model NAME` measures another",
    ErrorCode.EXPORT_IO: "check the export folder's disk space and permissions, then export again (a failed "
                         "export removes what it wrote)",
}


def table() -> str:
    """The README's table of codes: one Markdown row per code, in the enum's order."""
    rows = ["| code | what it means |", "|---|---|"]
    rows += [f"| `{code}` | {MEANINGS[code]} |" for code in ErrorCode]
    return "\n".join(rows) + "\n"
