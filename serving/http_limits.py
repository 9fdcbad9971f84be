"""A bound on an HTTP request's head (request line + headers), as production servers have.

uvicorn's httptools protocol (the fast one kfct serves with) accepts headers of any size;
only its h11 protocol has a limit (`h11_max_incomplete_event_size`, 16 KiB by default,
h11's own). One 1.1 MB `x-request-id`, copied into each of a request's 800 prediction-log
rows, once added ~1.3 GB to the server. This protocol keeps httptools' speed and refuses a
head over `MAX_HEAD_BYTES` with 431 (RFC 6585, "Request Header Fields Too Large"), the
connection closed: complete heads are measured exactly (URL + names + values), and a head
still incomplete after that many bytes is refused without waiting for its end, so no more
than one read (64 KiB) past the limit is ever buffered.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 16 * 1024  # h11's default, what uvicorn's h11 protocol enforces


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = MAX_HEAD_BYTES

    def connection_made(self, transport) -> None:
        self._head_bytes = 0  # bytes received since the current message began, while in its head
        self._in_head = True
        self._refused = False
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and not self._refused and self._head_bytes > self.max_head_bytes + 65536:
            self._refuse()  # a head that never ends: stop buffering it

    def on_message_begin(self) -> None:
        self._in_head = True
        self._measured = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._measured += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._measured += len(name) + len(value) + 4
        if self._measured > self.max_head_bytes:
            self._refuse()
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if self._refused or self._measured > self.max_head_bytes:
            self._refuse()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head = True
        if not self._refused:
            super().on_message_complete()

    def _refuse(self) -> None:
        if self._refused:
            return
        self._refused = True
        msg = b'{"error": "request headers exceed %d bytes", "field": "headers"}' % self.max_head_bytes
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(msg), msg)
        )
        self.transport.close()
