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
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        exec(compile(source, path, "exec"), module.__dict__)
    except BaseException:
        # A script that no longer loads leaves the module that did.
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        raise
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


class RequestTimeout(BaseException):
    """Raised by wsgi-fpm in a request's thread when the request ran past
    --request-timeout. A BaseException, like KeyboardInterrupt, so that an
    application's `except Exception` does not swallow it."""


def stack_of(ident):
    """The Python stack of thread `ident`, or None when it has none."""
    frame = sys._current_frames().get(ident)
    if frame is None:
        return None
    return "".join(traceback.format_stack(frame))


def all_stacks():
    """Every thread's Python stack: {ident: text}."""
    return {ident: "".join(traceback.format_stack(frame))
            for ident, frame in sys._current_frames().items()}


class LogStream:
    """A worker's sys.stdout and sys.stderr: each line written becomes a
    line of the error log, tagged with the request being served (mod_wsgi
    sends them to Apache's error log the same way). print(), tracebacks
    and the logging module's default handler all arrive here."""

    encoding = "utf-8"
    errors = "backslashreplace"

    def __init__(self, name, emit):
        import threading
        self.name = name
        self._emit = emit
        self._lock = threading.Lock()
        self._partial = {}
        self._ident = threading.get_ident

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        ident = self._ident()
        with self._lock:
            pending = self._partial.pop(ident, "") + text
            *lines, rest = pending.split("\n")
            if rest:
                self._partial[ident] = rest
        for line in lines:
            self._emit(self.name, line)
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        with self._lock:
            rest = self._partial.pop(self._ident(), "")
        if rest:
            self._emit(self.name, rest)

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False

    def fileno(self):
        import io
        raise io.UnsupportedOperation("the worker's %s is the error log" % self.name)


def redirect_output(emit):
    """sys.stdout and sys.stderr go to the error log, line by line."""
    sys.stdout = LogStream("stdout", emit)
    sys.stderr = LogStream("stderr", emit)
