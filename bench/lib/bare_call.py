"""The bare WSGI call, no server: what an application costs by itself.

    python bare_call.py APP_FILE PATH BODY_SIZE N

Calls the application N times the way a minimal server would: a fresh dict
environ (the CGI variables nginx sends, plus the wsgi.* keys), a BytesIO as
wsgi.input (empty, or, when BODY_SIZE is not 0, a POST's BODY_SIZE bytes of
bench/count's fixed pattern with CONTENT_LENGTH and CONTENT_TYPE set), a
start_response that keeps status and headers, the body joined, close()
called when the iterable has it; the last answer must be 200. bench/count runs
it under callgrind twice and divides the difference by the difference in N.
"""
import io
import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: bare_call.py APP_FILE PATH BODY_SIZE N")
    app_file, path, body_size, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    application = runpy.run_path(app_file)["application"]
    request_body = wire.body_of(body_size)
    base = dict(wire.cgi_params(path, body_size))
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
        environ["wsgi.input"] = io.BytesIO(request_body)
        result = application(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
    # Checked once, after the loop, so that the check is not counted per call.
    if n and (not seen or not seen[0].startswith("200")):
        sys.exit("unexpected answer: %r %r" % (seen, body[:200]))


if __name__ == "__main__":
    main()
