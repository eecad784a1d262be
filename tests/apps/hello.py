"""The smallest WSGI application: 13 bytes of "Hello, world!"."""


def application(environ, start_response):
    body = b"Hello, world!"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
