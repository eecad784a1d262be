"""Workload "10m": a 10 MiB file sent through ``wsgi.file_wrapper`` (a server
may use sendfile(2) for it).

The file is written once, world-readable (mod_wsgi's daemon processes run as
an unprivileged user), into $WSGI_FPM_BENCH_DATA or a directory under the
system's temp dir; bench/run creates it before any server starts.
"""
import os
import tempfile

SIZE = 10 * 1024 * 1024
PATTERN = bytes(range(256)) * 4096  # 1 MiB


def data_file():
    root = os.environ.get("WSGI_FPM_BENCH_DATA") or os.path.join(tempfile.gettempdir(), "wsgi-fpm-bench-data")
    path = os.path.join(root, "10MiB.bin")
    if not os.path.exists(path):
        os.makedirs(root, mode=0o755, exist_ok=True)
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "wb") as f:
            for _ in range(SIZE // len(PATTERN)):
                f.write(PATTERN)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return path


PATH = data_file()
HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(SIZE))]


def application(environ, start_response):
    f = open(PATH, "rb")
    start_response("200 OK", HEADERS)
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is None:
        return iter(lambda: f.read(65536), b"")
    return wrapper(f, 65536)
