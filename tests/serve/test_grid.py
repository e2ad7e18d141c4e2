"""The items grid's query: parsed from the URL, checked, and turned into rows from the columns it
needs only; and the LRU that keeps what pages read."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from preprocess.core.errors import ConfigError
from preprocess.serve.cache import LRU
from preprocess.serve.grid import GridQuery, Page, select
from preprocess.store.where import parse

COLUMNS = {
    "similarity": np.array([0.99, np.nan, 0.95, 0.999, 0.95], dtype=np.float32),
    "quality": np.array([30, 95, 40, 30, 60], dtype=np.int16),
    "bytes": np.array([100, 900, 300, 50, 400], dtype=np.int64),
    "status": np.array(["ok", "source", "ok", "ok", "flagged"], dtype=np.dtypes.StringDType()),
    "fingerprint": np.array(["a", "a", "b", "a", "b"], dtype=np.dtypes.StringDType()),
    "spec_name": np.array(["camera", "camera", "avif", "camera", "avif"], dtype=np.dtypes.StringDType()),
    "source_path": np.array(["/c/gate-1/cam0-1.jpg", "/c/gate-1/CAM0-2.JPG", "/c/gate-2/cam1-3.jpg", "/c/x.png",
                             "/c/gate-2/cam0-5.avif"], dtype=np.dtypes.StringDType()),
    "capture_time": np.array(["2026-11-30T23:59:59", "", "2026-10-31T10:00:00", "2026-11-01T00:00:00",
                              "2026-12-01T00:00:00"], dtype=np.dtypes.StringDType()),
    "format": np.array(["jpeg", "jpeg", "jpeg", "png", "avif"], dtype=np.dtypes.StringDType()),
    "camera_model": np.array(["A", "", "B", "A", "B"], dtype=np.dtypes.StringDType()),
    "commit": np.array(["7D0G" + "0" * 16, "7D0G" + "0" * 16, "9ZZZ" + "0" * 16, "9ZZZ" + "0" * 16,
                        "9ZZZ" + "1" * 16], dtype=np.dtypes.StringDType()),
}


def run(**params: str) -> list[int]:
    asked: list[str] = []
    q = GridQuery.parse(params)

    def column(name: str) -> np.ndarray:
        asked.append(name)
        return np.asarray(COLUMNS[name])

    rows: list[int] = select(column, 5, q).tolist()
    assert set(asked) == set(q.columns())  # only the columns it sorts or filters on
    return rows


def test_sorting_puts_ties_in_row_order_and_missing_similarities_last() -> None:
    assert run() == [0, 1, 2, 3, 4]
    assert run(order="desc") == [4, 3, 2, 1, 0]
    assert run(sort="similarity") == [2, 4, 0, 3, 1]
    assert run(sort="similarity", order="desc") == [3, 0, 2, 4, 1]
    assert run(sort="bytes", order="desc") == [1, 4, 2, 0, 3]
    assert run(sort="quality") == [0, 3, 2, 4, 1]


def test_filters_combine() -> None:
    assert run(status="ok") == [0, 2, 3]
    assert run(spec="b", sort="quality", order="desc") == [4, 2]
    assert run(spec="avif") == [2, 4]  # a spec by name, as `ls --where "spec = avif"` (it matched only fingerprints)
    assert run(similarity_max="0.96") == [2, 4]
    assert run(quality_min="40", bytes_max="400") == [2, 4]
    assert run(status="passthrough") == []


def test_bad_values_name_the_parameter() -> None:
    for params in ({"sort": "name"}, {"order": "up"}, {"status": "x"}, {"per_page": "10"}, {"page": "0"},
                   {"similarity_min": "inf"}, {"quality_min": "4.5"}, {"spec": "a b"}):
        with pytest.raises(ConfigError, match=f"bad {next(iter(params))}=") as e:
            GridQuery.parse(params)
        assert e.value.code == "SERVE_PARAM"
    with pytest.raises(ConfigError, match="bad page="):
        Page.of(np.arange(10), GridQuery(page=2, per_page=24))


@given(st.sampled_from(["row", "similarity", "quality", "bytes"]), st.sampled_from(["asc", "desc"]),
       st.sampled_from(["", "ok", "flagged"]), st.one_of(st.none(), st.integers(0, 100)),
       st.integers(1, 3), st.sampled_from([24, 48]))
def test_links_round_trip_through_the_url(sort: str, order: str, status: str, qmin: int | None, page: int,
                                          per_page: int) -> None:
    from urllib.parse import parse_qsl

    q = GridQuery(sort=sort, order=order, status=status, quality_min=qmin, page=page, per_page=per_page)
    assert GridQuery.parse(dict(parse_qsl(q.params()))) == q
    assert GridQuery.parse(dict(parse_qsl(q.params(page=1)))).selection_key == q.selection_key


def test_the_lru_keeps_the_recent_within_its_budget() -> None:
    cache: LRU[bytes] = LRU(max_items=3, max_bytes=10, size=len)
    for k in "abc":
        cache.put(k, b"123")
    assert cache.get("a") == b"123"  # a is now the most recent
    cache.put("d", b"1234")  # over 10 bytes: the least recent (b) goes
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 3
    cache.put("e", b"x" * 50)  # larger than the budget alone: kept (the one entry), others go
    assert len(cache) == 1 and cache.get_or_make("e", lambda: b"") == b"x" * 50


def test_search_commit_format_camera_dates_and_expressions_select_rows() -> None:
    """issue 23: the grid's search and filters are conditions of the `ls --where` language."""
    assert run(q="cam0") == [0, 1, 4]  # the file name or folder contains it, any case
    assert run(q="gate-2") == [2, 4]
    assert run(commit="7d0g") == [0, 1] and run(commit="9ZZZ0000") == [2, 3]
    assert run(format="jpeg", camera="B") == [2]
    assert run(captured_from="2026-11-01", captured_to="2026-11-30") == [0, 3]  # both days included, no date out
    shown = GridQuery.parse({"captured_from": "2026-11-01", "captured_to": "2026-12-31"}).to_where()
    assert str(shown) == "time >= 2026-11-01 and time < 2027-01-01"  # what `ls --where` takes (was "< 2026-12-31U")
    assert parse(str(shown)) == shown
    assert run(where="name ~ *.jpg or format = avif") == [0, 1, 2, 4]  # case-insensitive, like the search
    assert run(where="quality >= 40", q="cam", sort="bytes", order="desc") == [1, 4, 2]
    for params in ({"captured_from": "yesterday"}, {"captured_to": "2026-13-45"}, {"captured_to": "9999-12-31"},
                   {"commit": "7D"}, {"format": "a/b"}, {"q": "x" * 201}):
        with pytest.raises(ConfigError, match=f"bad {next(iter(params))}="):
            GridQuery.parse(params)
    with pytest.raises(ConfigError) as e:
        GridQuery.parse({"where": "nope < 1"})
    assert e.value.code == "WHERE_INVALID"


def test_spec_contains_matches_the_name_and_enumerations_ignore_case() -> None:
    """`spec ~ avif` matched the fingerprint's hex digits alone (0 rows where 2 are camera-avif), `spec !~
    avif` every row; `format = AVIF` matched nothing in `ls --where` where the grid's format=AVIF matched
    (a web UI audit, 2026-12-07)."""
    assert run(where="spec ~ AVI") == [2, 4]
    assert run(where="spec !~ avif") == [0, 1, 3]
    assert run(where="spec ~ a") == [0, 1, 2, 3, 4]  # a fingerprint or a name that contains it
    assert run(where="format = AVIF") == run(format="AVIF") == [4]
    assert run(where="status = OK or status = FLAGGED") == [0, 2, 3, 4]
    assert run(where="source_path ~ cam0-2.jpg") == [1]  # ~ was caseless already; a path's = is not
    assert run(where="source_path = /c/gate-1/CAM0-2.jpg") == []
