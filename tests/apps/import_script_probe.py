"""An --import-script for integration/test_master_lifecycle.py: leaves this
worker's pid in sys (for lifecycle_probe.py's /imported) and appends it to
the file named by PROBE_IMPORT_LOG."""
import os
import sys

sys._probe_import_script_pid = os.getpid()
_log = os.environ.get("PROBE_IMPORT_LOG")
if _log:
    with open(_log, "a") as f:
        f.write("%d\n" % os.getpid())
