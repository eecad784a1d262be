"""An auth script with no check_password and no allow_access, for
integration/test_auth.py: wsgi-fpm must then challenge with Digest by
default, and answer FCGI_APACHE_ROLE=ACCESS_CHECKER with the access
script's allow_access. Same users as auth_script.py.
"""
from auth_script import get_realm_hash, groups_for_user  # noqa: F401
