"""An auth script for wsgi-fpm's auth responder (--auth-script), used by
integration/test_auth.py: a small user table, as a script backed by Django's
user database or LDAP would have.

    user    password            groups            check_password returns
    alice   pw-alice-8c1d       staff, admins     True
    bob     pw-bob-4f2a         staff             True
    carol   pw-carol-93be       guests            "Carol" (the canonical name)
    dave    pw-dave-17d0        staff             {"PROCESS_GROUP": "blue", "AUTH_SOURCE": "table"}
    erin    pw-erin-6a55        (groups_for_user raises)
    boom    pw-boom-2c9e        (check_password and get_realm_hash raise)

User names are matched without regard to case (so "Carol", the canonical
name, is found too); any other user is unknown (None). allow_access denies
the hosts listed in the request header X-Deny-Hosts (comma-separated) and
raises when that header is "raise".

The passwords are distinctive so that the tests can grep the logs for them.
"""
import hashlib

USERS = {
    "alice": ("pw-alice-8c1d", ["staff", "admins"]),
    "bob": ("pw-bob-4f2a", ["staff"]),
    "carol": ("pw-carol-93be", ["guests"]),
    "dave": ("pw-dave-17d0", ["staff"]),
    "erin": ("pw-erin-6a55", None),
    "boom": ("pw-boom-2c9e", []),
}

#: What check_password returns for a user with the right password, when not True.
GRANTS = {
    "carol": "Carol",
    "dave": {"PROCESS_GROUP": "blue", "AUTH_SOURCE": "table"},
}


class UserDatabaseDown(RuntimeError):
    pass


def check_password(environ, user, password):
    key = user.lower()
    if key == "boom":
        raise UserDatabaseDown("user database unavailable (test user boom)")
    entry = USERS.get(key)
    if entry is None:
        return None
    if password != entry[0]:
        return False
    return GRANTS.get(key, True)


def get_realm_hash(environ, user, realm):
    key = user.lower()
    if key == "boom":
        raise UserDatabaseDown("user database unavailable (test user boom)")
    entry = USERS.get(key)
    if entry is None:
        return None
    # RFC 7616 A1 for MD5: the name as the client sent it.
    return hashlib.md5(("%s:%s:%s" % (user, realm, entry[0])).encode("utf-8")).hexdigest()


def groups_for_user(environ, user):
    entry = USERS.get(user.lower())
    if entry is None:
        return []
    if entry[1] is None:
        raise LookupError("group database unavailable (test user erin)")
    return list(entry[1])


def allow_access(environ, host):
    deny = environ.get("HTTP_X_DENY_HOSTS", "")
    if deny == "raise":
        raise PermissionError("host database unavailable (X-Deny-Hosts: raise)")
    return host not in [h.strip() for h in deny.split(",") if h.strip()]
