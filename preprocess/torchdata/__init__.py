"""PyTorch access to one version of the dataset (imported only when used: it needs torch).

::

    from preprocess.torchdata import VersionDataset, Where, loader

    if __name__ == "__main__":  # DataLoader workers are spawned: they import this file again
        ds = VersionDataset("cams.icechunk", ref="v1", where=Where(status="ok"), size=(224, 224))
        for batch in loader(ds, batch_size=32, num_workers=4):
            batch["image"]    # uint8 [N, 3, 224, 224] (CPU, or CUDA with decode="gpu")
            batch["quality"]  # tensor; strings (source_path, ...) are lists

``decode`` (the layout is the same for all: uint8 ``[3, H, W]`` images, stacked into ``[N, 3, H, W]``
when their sizes agree, which ``size=`` makes sure of; otherwise a list):

- ``"cpu"``: workers decode with pillow-simd (every stored format: JPEG, and AVIF/WebP/JPEG XL rows
  through imagecodecs; kept sources through the pipeline's own conversion: EXIF orientation, alpha
  composited on white, CMYK/16-bit converted), then ``size``/``fit``, then ``transform(PIL image)``;
- ``"gpu"``: workers read the stored bytes of JPEG rows; :func:`loader` decodes each batch in the
  main process on the GPU with DALI (:class:`preprocess.pipeline.engines.dali.ImageDecoder`: nvJPEG, libjpeg's
  fancy upsampling, so the same pixels as the CPU within decoder rounding) and resizes there (torch,
  bilinear antialiased, as Pillow). Rows that are not our own JPEGs (kept sources: PNG with alpha,
  GIF, CMYK ...; AVIF/WebP/JPEG XL) are decoded on the CPU by the workers, and an image DALI cannot
  decode is decoded on the CPU in the main process: one bad row never fails a batch. ``transform``
  takes a PIL image, so it is refused here (ConfigError TORCH_TRANSFORM);
- ``"none"``: bytes only (``item["jpeg"]``); ``"auto"``: ``gpu`` where DALI sees a CUDA device and no
  ``transform`` is given, else ``cpu``.

``where`` (:class:`Where`) keeps some rows of the version: by spec fingerprint, status, quality or
similarity range, source path prefix, and, on a branch that holds rows of several specs, one row per
source (the newest). ``size=(width, height)`` resizes every image on decode, like FFCV's and DALI's
readers: ``fit="crop"`` scales to cover the box and crops the centre, ``"stretch"`` ignores the
aspect ratio. ``draft=True`` (with ``size``; the CPU decode: DALI's decodes in full) decodes each stored
JPEG at the smallest of libjpeg's fast DCT scales (1/2, 1/4, 1/8) that is at least 1.5 times the resize (as
Pillow's ``thumbnail`` drafts, with its gap of 2), then resizes the part of it that holds the image: fewer
pixels to decode, and pixels within about a level of the full decode's (a mean of 0.06-0.84 levels on the
bundled photos stored at 1280 px, read at 224x224; more at much smaller sizes); off by default, so that the
items are exactly the full decode's.

Workers start fast and open the store at their first item. This process never loads icechunk for the
reader (the version's rows are read in a short-lived forked child), so :func:`loader` forks its workers:
they inherit torch and the decoders and import only icechunk. Forking a process that has loaded
icechunk (it did ``ds[0]``, or opened a dataset itself) would hang the child's first read: then
:func:`loader` starts its workers from a forkserver, and a worker a plain ``DataLoader`` forked anyway
raises one line, ConfigError TORCH_FORK, with the fix (:mod:`preprocess.torchdata.forking`).
``loader`` keeps its workers across epochs (``persistent_workers``, default True) and reads
``prefetch_factor`` batches ahead per worker; a batch's stored bytes are read in one call. A script
that iterates a loader with workers keeps the ``if __name__ == "__main__":`` guard (spawned and
forkserver workers import the script again).
"""

from preprocess.torchdata.dataset import FIELDS, VersionDataset, fit_box, fit_pil, read_version
from preprocess.torchdata.forking import WorkerForked
from preprocess.torchdata.loader import Loader, LoaderOptions, collate, fit_tensor, loader, stack
from preprocess.torchdata.where import Where

__all__ = ["FIELDS", "Loader", "LoaderOptions", "VersionDataset", "Where", "WorkerForked", "collate", "fit_box",
           "fit_pil", "fit_tensor", "loader", "read_version", "stack"]
