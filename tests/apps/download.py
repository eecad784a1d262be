"""Generate ``?size=N`` bytes (default 50 MiB) with a Content-Length.

The content is _common.generate(N), so the test knows its sha256 without a
file in git.
"""
from _common import generate, query


def application(environ, start_response):
    size = int(query(environ).get("size", 50 * 1024 * 1024))
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size)),
                              ("X-Seen-Method", environ["REQUEST_METHOD"])])
    return generate(size)
