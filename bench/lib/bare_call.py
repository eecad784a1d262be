"""The bare WSGI call, no server: what an application costs by itself.

    python bare_call.py APP_FILE PATH N

Calls the application N times the way a minimal server would: a fresh dict
environ (the CGI variables nginx sends, plus the wsgi.* keys), an empty
BytesIO as wsgi.input, a start_response that keeps status and headers, the
body joined, close() called when the iterable has it. bench/count runs it
under callgrind twice and divides the difference by the difference in N.
"""
import io
import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402


def main():
    app_file, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    application = runpy.run_path(app_file)["application"]
    base = dict(wire.cgi_params(path))
    base.update({"PATH_INFO": base.pop("SCRIPT_NAME"), "SCRIPT_NAME": "",
                 "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
                 "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False})
    seen = []

    def start_response(status, headers, exc_info=None):
        seen[:] = [status, headers]
        return None

    body = b""
    for _ in range(n):
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(b"")
        result = application(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
    if n and (not seen or not seen[0].startswith("200") or b"Hello, world!" not in body):
        sys.exit("unexpected answer: %r %r" % (seen, body[:80]))


if __name__ == "__main__":
    main()
