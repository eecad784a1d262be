"""Raise before start_response; the message carries ``?token=`` so the test
can find the traceback in wsgi-fpm's error log and check it is not in the body.
"""
from _common import query


class AppFailure(RuntimeError):
    pass


def application(environ, start_response):
    token = query(environ).get("token", "no-token")
    raise AppFailure("deliberate failure " + token)
