"""`preprocess serve`: a read-only web UI for a dataset (what lakeFS's UI is for lakeFS).

- :mod:`~preprocess.serve.catalog`: the store as pages read it (refs, history, rows), cached per snapshot;
- :mod:`~preprocess.serve.grid`: a version's items sorted, filtered and paged, from the columns needed only;
- :mod:`~preprocess.serve.renditions`: stored bytes as a browser can show them; thumbnails;
- :mod:`~preprocess.serve.compare`: a row's source beside its stored image, and the region that changed most;
- :mod:`~preprocess.serve.pages`, :mod:`~preprocess.serve.media`: the HTML pages and image responses;
- :mod:`~preprocess.serve.app`: the Starlette application (GET/HEAD only), :mod:`~preprocess.serve.server`: uvicorn.
"""

from preprocess.serve.app import create_app
from preprocess.serve.catalog import Catalog
from preprocess.serve.server import listen, open_catalog, run

__all__ = ["Catalog", "create_app", "listen", "open_catalog", "run"]
