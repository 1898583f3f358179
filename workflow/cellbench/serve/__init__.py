"""``cellbench serve``: one trained model folder behind an HTTP API and a web page.

- :mod:`cellbench.serve.options`: :class:`ServeOptions`, every server limit and its default.
- :mod:`cellbench.serve.decode`: upload bytes -> a checked image array (pure).
- :mod:`cellbench.serve.answers`: labels -> the answer formats (pure; the exporters'
  functions of :mod:`cellbench.export.formats`).
- :mod:`cellbench.serve.card`: the model card (model folder + test scores).
- :mod:`cellbench.serve.app`: the FastAPI application and :func:`~cellbench.serve.app.serve`.

FastAPI, uvicorn and python-multipart are the ``serve`` extra
(``pip install -e '.[serve]'``); only :mod:`cellbench.serve.app` imports them.
"""

from cellbench.serve.options import ServeOptions

__all__ = ["ServeOptions"]
