"""Serve a WSGI file with pyruvate in several processes sharing one socket.

    python serve_pyruvate.py APP_FILE HOST PORT PROCESSES THREADS KEEPALIVE_S

pyruvate.serve() runs one process with a pool of THREADS worker threads. To
get PROCESSES of them on one port, the socket is bound here and handed to
each process the way systemd socket activation does (fd 3, LISTEN_FDS=1,
LISTEN_PID=<its pid>), which pyruvate accepts when given None as address.
"""
import os
import runpy
import socket
import sys

import pyruvate

SD_LISTEN_FDS_START = 3


def main():
    app_file, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    processes, threads, keepalive = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    sys.path.insert(0, os.path.dirname(os.path.abspath(app_file)))
    application = runpy.run_path(app_file)["application"]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    if sock.fileno() != SD_LISTEN_FDS_START:
        os.dup2(sock.fileno(), SD_LISTEN_FDS_START)
        sock.close()
    os.set_inheritable(SD_LISTEN_FDS_START, True)
    for _ in range(processes - 1):
        if os.fork() == 0:
            break
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid())
    pyruvate.serve(application, None, threads, keepalive_timeout=keepalive)


if __name__ == "__main__":
    main()
