"""Workload "sleep": 10 ms of waiting (a database or an API call), then a
short answer. Measures how many requests a server's threads overlap."""
import time

BODY = b"slept 10 ms"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    time.sleep(0.01)
    start_response("200 OK", HEADERS)
    return [BODY]
