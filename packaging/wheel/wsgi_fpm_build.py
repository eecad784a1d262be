"""The PEP 517 build backend of the wsgi-fpm wheel: maturin, plus the master.

maturin builds one crate: here the worker (worker/Cargo.toml), the abi3
extension module. The wheel must also carry the `wsgi-fpm` master binary,
which is another crate of the workspace, and maturin cannot yet build both
(PyO3/maturin#368). So before maturin runs, this backend builds the master
with cargo (the same release profile and target directory, so a tree that
`cargo build --release` already built is only relinked, if at all) and
places it in maturin's wheel data directory as `scripts/wsgi-fpm`, which pip
installs into the environment's `bin/`. The directory exists only while a
wheel is being built: a later `maturin build` run by hand fails loudly
rather than packaging a stale master beside a new module.

Every other hook is maturin's own.
"""

import json
import os
import shutil
import subprocess
import sys

import maturin

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Must match `data` in pyproject.toml's [tool.maturin].
DATA = os.path.join(ROOT, "target", "wheel-data")

get_requires_for_build_wheel = maturin.get_requires_for_build_wheel
get_requires_for_build_sdist = maturin.get_requires_for_build_sdist
get_requires_for_build_editable = maturin.get_requires_for_build_editable


def _build_master():
    """Builds the master binary with cargo; returns its path."""
    cargo = shutil.which("cargo")
    if cargo is None:
        sys.exit("cargo is not on PATH: install Rust (https://rustup.rs) to build wsgi-fpm")
    command = [cargo, "build", "--release", "--package", "wsgi-fpm", "--bin", "wsgi-fpm",
               "--message-format=json-render-diagnostics"]
    print("Running `%s`" % " ".join(command), flush=True)
    # Cargo's messages go to stderr; its JSON (one object a line) names the
    # binary wherever the target directory is (CARGO_TARGET_DIR, config).
    out = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, check=False)
    if out.returncode != 0:
        sys.exit("cargo build of the wsgi-fpm binary failed")
    for line in out.stdout.decode(errors="replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if (msg.get("reason") == "compiler-artifact" and msg.get("executable")
                and msg.get("target", {}).get("name") == "wsgi-fpm"):
            return msg["executable"]
    sys.exit("cargo built no wsgi-fpm binary")


def _stage_master():
    shutil.rmtree(DATA, ignore_errors=True)
    scripts = os.path.join(DATA, "scripts")
    os.makedirs(scripts)
    staged = os.path.join(scripts, "wsgi-fpm")
    shutil.copyfile(_build_master(), staged)
    os.chmod(staged, 0o755)
    # The release profile keeps line tables for backtraces; the wheel does
    # without them (a fifth of the size), keeping the symbols.
    strip = shutil.which("strip")
    if strip:
        subprocess.run([strip, "--strip-debug", staged], check=True)


def _without_master(hook, directory, config_settings):
    # maturin checks that the data directory exists even when it only
    # writes the metadata or the source distribution; neither needs the
    # master.
    os.makedirs(DATA, exist_ok=True)
    try:
        return hook(directory, config_settings)
    finally:
        shutil.rmtree(DATA, ignore_errors=True)


def build_sdist(sdist_directory, config_settings=None):
    return _without_master(maturin.build_sdist, sdist_directory, config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    return _without_master(maturin.prepare_metadata_for_build_wheel, metadata_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    return _without_master(maturin.prepare_metadata_for_build_editable, metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _stage_master()
    try:
        return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)
    finally:
        shutil.rmtree(DATA, ignore_errors=True)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _stage_master()
    try:
        return maturin.build_editable(wheel_directory, config_settings, metadata_directory)
    finally:
        shutil.rmtree(DATA, ignore_errors=True)
