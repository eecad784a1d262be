# Python-side helpers of the wsgi-fpm worker, run once at worker start.
# Only what is simpler to say in Python than through the C API lives here.
import sys
import types
import importlib
import traceback
import warnings
import signal as _signal


def run_script(path, name):
    """Run a script file as its own module (as mod_wsgi does)."""
    with open(path, "rb") as f:
        source = f.read()
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    exec(compile(source, path, "exec"), module.__dict__)
    return module


def load_functions(path, name, names):
    """An auth or access script: the functions among `names` it defines."""
    module = run_script(path, name)
    return {n: getattr(module, n) for n in names if callable(getattr(module, n, None))}


def load_script(path, name, callable_name):
    """A WSGI script file: its callable."""
    module = run_script(path, name)
    try:
        return getattr(module, callable_name)
    except AttributeError:
        raise LookupError(
            "%s defines no callable named %r (see --callable)" % (path, callable_name)
        ) from None


def load_module(spec):
    """`package.module:callable` (callable may be dotted)."""
    module_name, _, attr = spec.partition(":")
    obj = importlib.import_module(module_name)
    for part in (attr or "application").split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LookupError("%s has no attribute %r" % (module_name, attr)) from None
    return obj


def format_exception(exc, tb):
    # The traceback comes separately: an exception fetched through the C API
    # need not carry it in __traceback__.
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def restrict_signals():
    """Applications cannot take the worker's signals away (mod_wsgi's
    WSGIRestrictSignal): signal.signal() warns and changes nothing."""
    original = _signal.signal

    def signal(signalnum, handler):
        warnings.warn(
            "wsgi-fpm: signal.signal(%r, ...) ignored: the worker owns its signals" % (signalnum,),
            RuntimeWarning,
            stacklevel=2,
        )
        return _signal.getsignal(signalnum)

    signal.__wrapped__ = original
    _signal.signal = signal


def run_import_script(path):
    """--import-script: run FILE once in this worker before the first
    request (mod_wsgi's WSGIImportScript)."""
    import runpy
    runpy.run_path(path, run_name="__wsgi_fpm_import__")


def add_paths(paths):
    import site
    for p in paths:
        site.addsitedir(p)


def fork_workers(control_fd, start_worker):
    """--preload: the template's loop. Each message from the master on the
    control socket carries a new worker's status pipe; the template forks
    twice, so that the worker is orphaned at once and the master (its
    subreaper) adopts it, and tells the master the worker's pid. Returns
    the worker's exit code in a worker, 0 in the template when the master
    closes the socket."""
    import os
    import socket
    import time

    control = socket.socket(fileno=control_fd)
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(control, 64, 1)
        except InterruptedError:
            continue
        if not message:
            return 0
        if not fds:
            continue
        status_fd = fds[0]
        # "fork SLOT": the new worker's scoreboard slot, if it has one.
        parts = message.split()
        slot = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
        intermediate = os.fork()
        if intermediate == 0:
            me = os.getpid()
            worker = os.fork()
            if worker == 0:
                control.close()
                # Adopted by the master once the intermediate process exits.
                while os.getppid() == me:
                    time.sleep(0.001)
                return start_worker(status_fd, slot)
            os.write(control.fileno(), b"%d\n" % worker)
            os._exit(0)
        os.close(status_fd)
        os.waitpid(intermediate, 0)
