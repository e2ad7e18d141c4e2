"""`preprocess serve`: a read-only web UI for a dataset (what lakeFS's UI is for lakeFS).

- :mod:`~preprocess.serve.catalog`: the store as pages read it (refs, history, rows), cached per snapshot;
- :mod:`~preprocess.serve.grid`: a version's items searched, filtered (:mod:`preprocess.store.where`), sorted
  and paged, from the columns needed only;
- :mod:`~preprocess.serve.renditions`: stored bytes as a browser can show them; thumbnails;
- :mod:`~preprocess.serve.compare`: a row's source beside its stored image, and the region that changed most;
- :mod:`~preprocess.serve.comparer`: "Compare at 100%": the square and the crops of each side;
- :mod:`~preprocess.serve.charts`: histograms and bars over commits, as plain SVG;
- :mod:`~preprocess.serve.downloads`: one image, a selection as zip or CSV, a commit's spec as TOML;
- :mod:`~preprocess.serve.pages`, :mod:`~preprocess.serve.media`: the HTML pages and image responses;
- :mod:`~preprocess.serve.app`: the Starlette application (GET/HEAD only), :mod:`~preprocess.serve.server`: uvicorn.
"""

from preprocess.serve.app import create_app
from preprocess.serve.catalog import Catalog
from preprocess.serve.server import listen, open_catalog, run

__all__ = ["Catalog", "create_app", "listen", "open_catalog", "run"]
