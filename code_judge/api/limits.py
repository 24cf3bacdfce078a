"""ASGI middleware that answers 413 for request bodies over MAX_REQUEST_SIZE, before they are buffered."""

from __future__ import annotations

import json


class BodySizeLimit:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send, size_note: str) -> None:
        body = json.dumps({"detail": f"request body {size_note} exceeds MAX_REQUEST_SIZE={self.max_bytes} bytes"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body.encode()})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send, f"of {int(declared)} bytes")
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooBig()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooBig:
            await self._reject(send, "(streamed)")


class _TooBig(Exception):
    pass
