"""An application with a big import (for --preload): 50 MB of data built at
import, not zero pages, so sharing it copy-on-write shows in PSS. Reports
which process imported it and which serves."""
import json
import os

IMPORTED_BY = os.getpid()
BLOB = bytes(range(256)) * (50 * 1024 * 1024 // 256)
VERSION = "v1"


def application(environ, start_response):
    marker = os.environ.get("PRELOAD_MARKER_DIR")
    seen = sorted(os.listdir(marker)) if marker else []
    body = json.dumps({
        "pid": os.getpid(), "imported_by": IMPORTED_BY, "version": VERSION,
        "blob": len(BLOB), "import_script_ran_in": seen,
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
