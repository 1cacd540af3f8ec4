"""The embedding service as a Django project, batched through django_microbatch.

Served under ASGI (``examples.django_app.asgi:application``, async views awaiting ``acall``/``amap``)
or WSGI (``examples.django_app.wsgi:application``, sync views calling the batcher from each
request's thread). Under ASGI Django would hand each sync view to a thread of its own and back, so
:mod:`.middleware` routes each request to the views that suit its server.
"""
