"""Image formats of untrusted sources: what a file is (:mod:`.sniff`), what its header says before any
pixel is decoded (:mod:`.containers`, Pillow for the rest), strict JPEG decoding (:mod:`.jpeg`), sample
formats to 8 bits (:mod:`.pixels`) and embedded colour profiles to sRGB (:mod:`.colour`).

:mod:`preprocess.images` puts them together (``probe``, ``decode_rgb``); nothing else imports these.
"""
