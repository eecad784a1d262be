#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine as root or on a developer's:
#   1. installs what is missing: nginx-light, apache2, lighttpd, curl (apt-get,
#      as root only) and pytest, flask, django, prometheus_client, pyyaml (pip, for
#      the python3 on PATH: the interpreter wsgi-fpm runs applications with);
#   2. builds the release binary and runs the cargo tests;
#   3. runs the end-to-end suite (integration/, pytest) against real nginx,
#      Apache httpd and lighttpd in front of target/release/wsgi-fpm;
#   4. builds the wheel and the Debian package, installs each and serves
#      from the install behind nginx (integration/test_install.py).
# Environment: WSGI_FPM_BIN (default target/release/wsgi-fpm), PYTEST_ARGS
# (extra pytest arguments, e.g. "-k nginx -x"), SKIP_CARGO=1 (reuse the built
# binary, skip cargo), SKIP_INSTALL=1 (install nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------- packages
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    missing=()
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v apache2 >/dev/null 2>&1 || [ -x /usr/sbin/apache2 ] || missing+=(apache2)
    command -v lighttpd >/dev/null 2>&1 || [ -x /usr/sbin/lighttpd ] || missing+=(lighttpd)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ]; then
            log "apt-get install ${missing[*]}"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -q
            # A temporary policy-rc.d keeps the packages from starting their
            # own services (nginx and Apache would fight over port 80; the
            # tests start their own instances on loopback ports).
            policy=""
            if [ ! -e /usr/sbin/policy-rc.d ]; then
                policy=/usr/sbin/policy-rc.d
                printf '#!/bin/sh\nexit 101\n' > "$policy"
                chmod +x "$policy"
                trap 'rm -f /usr/sbin/policy-rc.d' EXIT
            fi
            apt-get install -y -q --no-install-recommends "${missing[@]}"
            if [ -n "$policy" ]; then rm -f "$policy"; trap - EXIT; fi
        else
            echo "missing ${missing[*]}: install them (as root: apt-get install ${missing[*]})" >&2
        fi
    fi
    # Modules the Apache configs load (shipped in the apache2-bin package).
    for m in proxy proxy_fcgi proxy_scgi proxy_uwsgi mpm_event authz_core \
             authn_core authn_file authz_user auth_basic authnz_fcgi setenvif; do
        [ -e "/usr/lib/apache2/modules/mod_$m.so" ] || echo "warning: mod_$m.so not found" >&2
    done
    # conf/nginx/auth.conf needs auth_request (Debian's nginx has it; on
    # bookworm nginx-light is a transitional package that installs nginx).
    "$(command -v nginx || echo /usr/sbin/nginx)" -V 2>&1 | grep -q http_auth_request_module ||
        echo "warning: this nginx has no auth_request module (integration/test_auth.py needs it)" >&2
    # Into the python3 on PATH: wsgi-fpm runs the test applications with it.
    if ! python3 -c 'import pytest, flask, django, prometheus_client, yaml' 2>/dev/null; then
        log "pip install pytest flask django prometheus_client pyyaml"
        if ! python3 -m pip --version >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-pip
        fi
        # A distribution's own python3 refuses pip installs (PEP 668); on a
        # throw-away test machine installing anyway is what we want.
        python3 -m pip install -q pytest flask django prometheus_client pyyaml ||
            python3 -m pip install -q --break-system-packages pytest flask django prometheus_client pyyaml
    fi
fi

# ---------------------------------------------------------------- cargo
if [ "${SKIP_CARGO:-0}" != 1 ]; then
    log "cargo build --release --workspace"
    cargo build --release --workspace
    log "cargo test"
    # --release shares the dependency builds with the binary above.
    cargo test --release --workspace --all-targets
fi

# ---------------------------------------------------------------- end to end
export WSGI_FPM_BIN="${WSGI_FPM_BIN:-$ROOT/target/release/wsgi-fpm}"
log "end-to-end tests against $WSGI_FPM_BIN"
# shellcheck disable=SC2086
timeout 1200 python3 -m pytest integration -q -p no:cacheprovider \
    --ignore=integration/test_install.py ${PYTEST_ARGS:-}
# Separately: the wheel is another release build of the worker crate
# (maturin, which pip fetches from the package index, shares target/ with
# the build above); the Debian package is made from the binaries built
# above, installed, served from and purged (as root).
log "install: the wheel into a fresh venv, the Debian package"
timeout 1800 python3 -m pytest integration/test_install.py -q -p no:cacheprovider
# --against refuses WSGI_FPM_WORKER_MODULE (both builds would load the module
# it names): with it set, the twins are left out.
against=(--against "$WSGI_FPM_BIN")
[ -n "${WSGI_FPM_WORKER_MODULE:-}" ] && against=()
log "bench/run --check: every benchmark workload answered right (and --against, with the same binary)"; timeout 300 python3 bench/run --check "${against[@]}"
