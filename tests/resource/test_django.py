"""Django through the WSGI middleware: a real (one-module) Django project whose ``wsgi.py``
wraps ``get_wsgi_application()`` as docs/RESOURCE_SERVERS.md shows, served by a real
gunicorn next to a real Latchkey and Redis. A live session is served, with the principal in
``request.META``; the very next request after a logout-all is refused with the reason."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import VENV_BIN, free_port
from tests.resource.backend_support import promise_holds, served

DJANGO_PROJECT = '''
import os

from django.conf import settings
from django.http import JsonResponse
from django.urls import path

settings.configure(DEBUG=False, ALLOWED_HOSTS=["127.0.0.1"], ROOT_URLCONF=__name__,
                   SECRET_KEY="test-only", MIDDLEWARE=[], INSTALLED_APPS=[])


def orders(request):
    principal = request.META["latchkey.principal"]
    return JsonResponse({"user_id": principal.user_id, "username": principal.username})


urlpatterns = [path("orders", orders)]

# wsgi.py, as docs/RESOURCE_SERVERS.md shows it
from django.core.wsgi import get_wsgi_application  # noqa: E402
from latchkey_resource import ResourceVerifier  # noqa: E402
from latchkey_resource.wsgi import LatchkeyWSGIMiddleware  # noqa: E402

ISSUER, REDIS_URL = os.environ["LATCHKEY_ISSUER"], os.environ["LATCHKEY_REDIS_URL"]
application = LatchkeyWSGIMiddleware(get_wsgi_application(), ResourceVerifier(ISSUER, REDIS_URL),
                                     exempt_paths={"/healthz"})
'''


def test_a_django_project_behind_the_wsgi_middleware_keeps_the_promise(
        deployment, tmp_path: Path):
    (tmp_path / "django_orders.py").write_text(DJANGO_PROJECT)
    port = free_port()
    with served([str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}",
                 "--chdir", str(tmp_path), "django_orders:application"], deployment,
                port) as base:
        promise_holds(deployment, base)
