"""The row contract: the item and failure rows, their keys, a commit's provenance and the catalogue of
stored formats. Both the pipeline (which makes rows) and the store (which keeps them) import it; neither
owns it. Imports only :mod:`preprocess.core`."""
