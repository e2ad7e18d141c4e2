"""The pipeline: spec, decoding, engines (decode -> resize -> encode), the feature extractor, the gate's
search and the batch processor. Imports core, sources and rows; never the store."""
