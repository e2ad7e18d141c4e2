"""Sources: where images come from (local folders, object storage) and reading their untrusted bytes.

Imports only :mod:`preprocess.core`."""
