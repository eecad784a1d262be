"""What a request thread hands the application, and what becomes of what
the application keeps (the objects are reused from request to request only
while nobody else holds them).

    POST ?keep=1   stores this request's wsgi.input, wsgi.errors and
                   start_response in a module global
    POST           answers JSON: the ids of wsgi.input and wsgi.errors, the
                   body read, and whether the stored objects are this
                   request's and what reading the stored input gives
"""
import json

STASH = {}


def application(environ, start_response):
    body = environ["wsgi.input"].read()
    stash = dict(STASH)
    if "keep=1" in environ.get("QUERY_STRING", ""):
        STASH.update(input=environ["wsgi.input"], errors=environ["wsgi.errors"],
                     start_response=start_response)
    out = {
        "input": id(environ["wsgi.input"]),
        "errors": id(environ["wsgi.errors"]),
        "body": body.decode("latin-1"),
    }
    if stash:
        out["stashed_is_this"] = [stash["input"] is environ["wsgi.input"],
                                  stash["errors"] is environ["wsgi.errors"],
                                  stash["start_response"] is start_response]
        try:
            out["stashed_read"] = stash["input"].read().decode("latin-1")
        except Exception as e:  # a finished request's input may refuse
            out["stashed_read"] = "raised " + type(e).__name__
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(out).encode()]
