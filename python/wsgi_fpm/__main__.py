"""``python -m wsgi_fpm ARGS``: runs the installed ``wsgi-fpm`` binary.

For when pip's scripts directory is not on PATH (``pip install --user``
without ``~/.local/bin`` on it). The binary replaces this interpreter (the
master runs no Python), keeping its process id for service managers.
"""

import os
import sys

from wsgi_fpm import find_wsgi_fpm_bin


def main():
    binary = find_wsgi_fpm_bin()
    os.execv(binary, [binary, *sys.argv[1:]])


if __name__ == "__main__":
    main()
