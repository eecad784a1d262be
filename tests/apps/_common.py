"""Helpers shared by the test applications (not an application itself).

The data helpers are deterministic so that the tests can compute the same
bytes and hashes without the apps having to ship any file.
"""
import hashlib
from urllib.parse import parse_qs

#: 64 KiB block that big responses are made of: a hash chain, so that a
#: shifted, repeated or dropped block changes the overall sha256.
BLOCK_SIZE = 64 * 1024


def block(i):
    """The i-th 64 KiB block of the generated download stream."""
    seed = hashlib.sha256(b"wsgi-fpm-%d" % i).digest()
    return (seed * (BLOCK_SIZE // len(seed)))[:BLOCK_SIZE]


def generate(size):
    """Yield `size` bytes of the generated stream, block by block."""
    i = 0
    while size > 0:
        chunk = block(i)[:size]
        size -= len(chunk)
        i += 1
        yield chunk


def sha256_of_generated(size):
    h = hashlib.sha256()
    for chunk in generate(size):
        h.update(chunk)
    return h.hexdigest()


def query(environ):
    """QUERY_STRING as a dict of last values (str)."""
    q = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {k: v[-1] for k, v in q.items()}


def full_path(environ):
    """SCRIPT_NAME + PATH_INFO: the request path whatever the split."""
    return environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
