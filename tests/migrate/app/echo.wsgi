"""A WSGI application that answers with what the front end and the server
gave it: the keys that must come out the same before and after a migration
(integration/test_migrate.py runs it under mod_wsgi, uWSGI and wsgi-fpm)."""
import json
import os

KEYS = ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_METHOD", "wsgi.url_scheme")


def application(environ, start_response):
    length = environ.get("CONTENT_LENGTH") or "0"
    body = environ["wsgi.input"].read(int(length)) if length.isdigit() else b""
    answer = {k: environ.get(k) for k in KEYS}
    answer["body"] = body.decode("utf-8", "replace")
    answer["GREETING"] = os.environ.get("GREETING")
    # Which server ran it: the tests check that "before" and "after" really
    # are the old server and wsgi-fpm.
    answer["server"] = next((name for key, name in (("mod_wsgi.version", "mod_wsgi"),
                                                    ("uwsgi.version", "uWSGI"),
                                                    ("wsgi_fpm.request_id", "wsgi-fpm"))
                             if key in environ), "?")
    status = "404 Not Found" if environ.get("PATH_INFO") == "/missing" else "200 OK"
    data = json.dumps(answer, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
