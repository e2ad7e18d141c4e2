"""The feature extractor: model manifests, building ONNX files from shipped weights, inference."""

from preprocess.pipeline.extractor.manifest import Manifest, find_manifest, list_manifests
from preprocess.pipeline.extractor.view import model_view

__all__ = ["Manifest", "find_manifest", "list_manifests", "model_view"]
