"""An access script (--access-script) for integration/test_auth.py:
allow_access runs before the application on every request (and answers
FCGI_APACHE_ROLE=ACCESS_CHECKER when the auth script has no allow_access).

It denies the hosts listed in the request header X-Block-Hosts
(comma-separated) and raises when that header is "raise". (A different
header from auth_script.py's X-Deny-Hosts, so that a test can tell which
script answered.)
"""


def allow_access(environ, host):
    block = environ.get("HTTP_X_BLOCK_HOSTS", "")
    if block == "raise":
        raise PermissionError("host database unavailable (X-Block-Hosts: raise)")
    return host not in [h.strip() for h in block.split(",") if h.strip()]
