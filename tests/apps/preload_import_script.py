"""--import-script for the preload tests: marks each process it runs in."""
import os

marker = os.environ.get("PRELOAD_MARKER_DIR")
if marker:
    open(os.path.join(marker, str(os.getpid())), "w").close()
