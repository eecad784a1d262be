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
