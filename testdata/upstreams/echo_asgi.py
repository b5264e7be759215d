"""An echo ASGI app for keyhole's upstream tests, run by hypercorn as
echo_asgi:app.

An HTTP request is answered with JSON of its path, its headers as
received and the HTTP version it arrived with: "2" after an h2c upgrade.
A WebSocket is accepted and sent the same JSON as one text message.
GET /__count tells how many other requests it has served.
"""

import json

_count = 0


def _echo(scope):
    return json.dumps({
        "server": "hypercorn",
        "type": scope["type"],
        "method": scope.get("method", ""),
        "path": scope["path"],
        "http_version": scope["http_version"],
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
    })


async def app(scope, receive, send):
    global _count
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        _count += 1
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": _echo(scope)})
        await send({"type": "websocket.close"})
        return
    if scope["path"] == "/__count":
        body = json.dumps({"count": _count})
    else:
        _count += 1
        body = _echo(scope)
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body.encode()})
