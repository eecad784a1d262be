"""One WSGI application that serves every test app, chosen by the LAST path
segment of SCRIPT_NAME + PATH_INFO, so that routing still works when a
server splits the path wrongly (that split is checked by the env dump, which
is what every unknown name gets).

    /hello  /upload  /download  /stream  /raise  /closerec  /filewrapper  /sleep
    /response  /keeper
    anything else → environ as JSON
"""
import close_recorder
import download
import env_app
import file_wrapper_app
import hello
import keeper
import raising
import responses
import sleeper
import stream
import upload_hash
from _common import full_path

ROUTES = {
    "hello": hello.application,
    "upload": upload_hash.application,
    "download": download.application,
    "stream": stream.application,
    "raise": raising.application,
    "response": responses.application,
    "closerec": close_recorder.application,
    "filewrapper": file_wrapper_app.application,
    "sleep": sleeper.application,
    "keeper": keeper.application,
}


def application(environ, start_response):
    name = full_path(environ).rstrip("/").rsplit("/", 1)[-1]
    return ROUTES.get(name, env_app.application)(environ, start_response)
