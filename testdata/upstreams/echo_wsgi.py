"""An echo WSGI app for keyhole's upstream tests.

It answers every request with JSON of what the WSGI server made of it:
PATH_INFO and every HTTP_* key of the environ, as the server folded the
header names into them. GET /__count tells how many other requests it
has served. Run by gunicorn as echo_wsgi:app, or alone with wsgiref:
python3 echo_wsgi.py PORT.
"""

import json
import sys
import threading

_lock = threading.Lock()
_count = 0


def app(environ, start_response):
    global _count
    if environ.get("PATH_INFO") == "/__count":
        with _lock:
            body = {"count": _count}
    else:
        with _lock:
            _count += 1
        body = {
            "server": environ.get("SERVER_SOFTWARE", ""),
            "method": environ["REQUEST_METHOD"],
            "path": environ.get("PATH_INFO", ""),
            "environ": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
        }
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]


if __name__ == "__main__":
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    make_server("127.0.0.1", int(sys.argv[1]), app, handler_class=QuietHandler).serve_forever()
