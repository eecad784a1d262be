"""The smallest WSGI application: it answers "Hello, world!" (13 bytes).

Run it behind nginx (conf/nginx/fastcgi.conf) with:

    wsgi-fpm --fastcgi 127.0.0.1:9000 examples/hello.py

or without any front end, for a quick look:

    wsgi-fpm --http 127.0.0.1:8000 examples/hello.py
    curl http://127.0.0.1:8000/
"""


def application(environ, start_response):
    body = b"Hello, world!"
    start_response("200 OK", [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
    ])
    return [body]
