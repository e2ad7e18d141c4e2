"""The gate's part of a pipeline spec: which models, which views with which thresholds, and the views'
settings (``[gate]``, ``[gate.views]``, ``[gate.crops]``); :mod:`preprocess.pipeline.spec` holds the rest."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

type JSON = str | int | float | bool | list[JSON] | dict[str, JSON] | None  # a spec (section) as data


class Frozen(BaseModel):
    """A spec section: unknown fields are errors, values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ViewName = Literal["whole", "crops", "tiles"]
VIEW_NAMES: tuple[ViewName, ...] = ("whole", "crops", "tiles")
Threshold = Annotated[float, Field(gt=-1.0, le=1.0)]


class Views(Frozen):
    """The views the gate checks, each with its threshold (a view left out is not checked):

    - ``whole``: the whole image as the model sees it (squashed to its input size) against the source's;
    - ``crops``: crops of the stored image at its own resolution (the four quadrants and the centre half;
      ``[gate.crops]`` adds finer grids), each against the same crop of the uncompressed resized source,
      judged by the worst crop;
    - ``tiles``: model-sized tiles at the stored resolution, combined by ``gate.tiles_combine``.
    """

    whole: Threshold | None = None
    crops: Threshold | None = None
    tiles: Threshold | None = None

    @model_validator(mode="after")
    def _some(self) -> Views:
        if not self.items():
            raise ValueError("name at least one view: whole, crops or tiles")
        return self

    def items(self) -> list[tuple[ViewName, float]]:
        """The checked views and their thresholds, in the order of :data:`VIEW_NAMES`."""
        return [(name, t) for name in VIEW_NAMES if (t := getattr(self, name)) is not None]


class Crops(Frozen):
    """Which crops the ``crops`` view cuts: each grid ``g`` is ``g`` x ``g`` equal cells (2: the four
    quadrants), plus the centre half (``centre``)."""

    grids: tuple[Annotated[int, Field(ge=1, le=8)], ...] = (2,)
    centre: bool = True

    @model_validator(mode="after")
    def _check(self) -> Crops:
        if len(set(self.grids)) != len(self.grids):
            raise ValueError("gate.crops.grids: a grid is listed twice")
        if not self.grids and not self.centre:
            raise ValueError("gate.crops: no crops (no grids and no centre)")
        return self


class Gate(Frozen):
    """The feature check: per candidate, the cosine similarity of the source's and the candidate's
    embeddings under every view (:class:`Views`) of every model; a candidate passes only if all pass.

    ``model`` + ``threshold`` (+ ``view``) are the older spelling of one model and one view: they still
    parse, and such a spec keeps its fingerprint (:meth:`to_dict`)."""

    models: tuple[str, ...] = ("mobilenetv2-imagenet",)
    views: Views = Views(whole=0.99)  # as before the other views: such specs keep their fingerprint (Spec.warnings)
    on_fail: Literal["flag", "source", "reject"] = "flag"
    tiles_combine: Literal["min", "p10", "mean"] = "p10"
    crops: Crops = Crops()

    @model_validator(mode="before")
    @classmethod
    def _older_spelling(cls, data: object) -> object:
        """``model`` -> ``models``; ``threshold`` and ``view`` -> ``views``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "model" in data:
            if "models" in data:
                raise ValueError("gate.model: give gate.models or gate.model, not both")
            data["models"] = (data.pop("model"),)
        elif isinstance(data.get("models"), str):
            data["models"] = (data["models"],)
        if "threshold" in data or "view" in data:
            if "views" in data:
                raise ValueError("gate.threshold: give gate.views or gate.threshold (and gate.view), not both")
            view, threshold = data.pop("view", "whole"), data.pop("threshold", 0.99)
            if view not in ("whole", "tiles"):
                raise ValueError(f"gate.view: {view!r} is not 'whole' or 'tiles' (more views: gate.views)")
            data["views"] = {view: threshold}
        return data

    @model_validator(mode="after")
    def _check_models(self) -> Gate:
        if not self.models:
            raise ValueError("gate.models: name at least one model")
        if len(set(self.models)) != len(self.models):
            raise ValueError("gate.models: a model is listed twice")
        return self

    @property
    def model(self) -> str:
        """The primary model: its embedding is stored with each row, its whole view seeds the search."""
        return self.models[0]

    @property
    def threshold(self) -> float:
        """The first view's threshold (the scale a candidate's gate score is on: :meth:`score`)."""
        return self.views.items()[0][1]

    @property
    def view(self) -> ViewName:
        """The first view checked."""
        return self.views.items()[0][0]

    def checks(self) -> list[tuple[str, ViewName, float]]:
        """Every (model, view, threshold) a candidate must pass, the primary first."""
        return [(m, v, t) for m in self.models for v, t in self.views.items()]

    def to_dict(self) -> dict[str, JSON]:
        """The gate as data. One model and one view (whole or tiles) is written in the older spelling, and
        settings of views that are not checked are left out, so specs written before them keep their
        fingerprint and digest."""
        views = self.views.items()
        if len(self.models) == 1 and len(views) == 1 and views[0][0] != "crops":
            data: dict[str, JSON] = {"model": self.model, "threshold": self.threshold, "on_fail": self.on_fail}
            if self.view == "tiles":
                data |= {"view": "tiles", "tiles_combine": self.tiles_combine}
            return data
        data = {"models": list(self.models), "views": dict(views), "on_fail": self.on_fail}
        if self.views.tiles is not None:
            data["tiles_combine"] = self.tiles_combine
        if self.views.crops is not None:
            data["crops"] = self.crops.model_dump(mode="json")
        return data
