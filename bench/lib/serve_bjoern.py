"""Serve a WSGI file with bjoern in several processes sharing one socket.

    python serve_bjoern.py APP_FILE HOST PORT PROCESSES

bjoern has no process manager of its own: the application is loaded and the
socket bound once, then the process forks so that PROCESSES processes, each
one single-threaded event loop, accept from the same socket.
"""
import os
import runpy
import sys

import bjoern


def main():
    app_file, host, port, processes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sys.path.insert(0, os.path.dirname(os.path.abspath(app_file)))
    application = runpy.run_path(app_file)["application"]
    bjoern.listen(application, host, port)
    for _ in range(processes - 1):
        if os.fork() == 0:
            break
    bjoern.run()


if __name__ == "__main__":
    main()
