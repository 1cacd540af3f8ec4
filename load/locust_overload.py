"""Locust users for ``load/overload.py``: the locustfile's checked single-text user, which honours
``Retry-After`` as a well-behaved client (or a retrying proxy) does, and one that retries at once.

    locust -f load/locust_overload.py --host http://127.0.0.1:8000 --headless -u 300 -r 300 -t 30s PoliteUser

Importing ``locustfile`` brings its response checks and its measurement-window records (the
``--results-file`` JSON) along.
"""

from __future__ import annotations

from locustfile import InteractiveUser


class PoliteUser(InteractiveUser):
    """One text per request, back to back; after a 503 with Retry-After it waits that long (the locustfile's
    users all do: this one has its own name in the tables)."""

    weight = 1
    request_name = "/embed text (polite)"


class ImpatientUser(InteractiveUser):
    """One text per request, back to back, ignoring Retry-After: the harshest client, retrying at once."""

    weight = 1
    request_name = "/embed text (impatient)"
    honours_retry_after = False
