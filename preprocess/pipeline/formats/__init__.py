"""Image formats of untrusted sources: what a file is (:mod:`.sniff`), what its header says before any
pixel is decoded (:mod:`.containers`, Pillow for the rest), strict JPEG decoding (:mod:`.jpeg`), sample
formats to 8 bits (:mod:`.pixels`) and embedded colour profiles to sRGB (:mod:`.colour`).

:mod:`preprocess.pipeline.images` puts them together (``probe``, ``decode_rgb``); besides it, only :mod:`.sniff` is
imported elsewhere (the one signature table: stored bytes in ``codecs``, what the web UI serves as is).
"""
