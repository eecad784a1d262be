"""Workload "64k": a 64 KiB body built once at import, returned as one piece."""

BODY = bytes(range(256)) * 256
HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
