"""Ara behind a stand-in for an authenticating web server (bench/lanes.py --auth): the user of a
request's Basic header becomes REMOTE_USER, as nginx or Apache set it once *they* have checked the
password (with a cheap hash, or a session). Ara runs with ARA_EXTERNAL_AUTH=true and trusts it:
no PBKDF2 per request. NOT a way to run Ara: nothing here checks the password."""

from __future__ import annotations

import base64

from ara.server.wsgi import application as ara_application


def application(environ, start_response):  # noqa: ANN001, ANN201 - WSGI
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if auth.startswith("Basic "):
        user = base64.b64decode(auth[6:]).decode("utf-8", "replace").split(":", 1)[0]
        environ["REMOTE_USER"] = user
        del environ["HTTP_AUTHORIZATION"]  # the web server consumed it
    return ara_application(environ, start_response)
