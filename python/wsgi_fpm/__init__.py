"""wsgi-fpm, as installed by pip.

The package holds the worker module (``wsgi_fpm_worker.abi3.so``) that each
pool's own interpreter loads by path; the ``wsgi-fpm`` master binary that
starts those interpreters was installed beside this environment's
``python`` (``<prefix>/bin``), and finds the module here by itself.
Nothing in this package is imported by a running server: these helpers are
for people and scripts asking where things are.
"""

import os
import sys
import sysconfig

__all__ = ["worker_module", "find_wsgi_fpm_bin"]

_MODULE = "wsgi_fpm_worker.abi3.so"


def worker_module():
    """The path of the worker module installed with this package."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), _MODULE)


def find_wsgi_fpm_bin():
    """The ``wsgi-fpm`` binary installed with this package.

    pip puts it in the scripts directory of the scheme it installed into:
    ``<prefix>/bin`` for ``<prefix>/lib/pythonX.Y/site-packages/wsgi_fpm``
    (a venv, pipx, a pyenv or system prefix, ``~/.local`` after
    ``pip install --user``); the schemes of this interpreter are asked too.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    prefix = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(here))))
    dirs = [os.path.join(prefix, "bin"), sysconfig.get_path("scripts")]
    user = "posix_user" if sys.version_info < (3, 10) else sysconfig.get_preferred_scheme("user")
    try:
        dirs.append(sysconfig.get_path("scripts", user))
    except KeyError:
        pass
    for d in dirs:
        candidate = os.path.join(d, "wsgi-fpm")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(
        "the wsgi-fpm binary is not installed beside this package (looked in %s)" % ", ".join(dirs)
    )
