"""A small HTTP/1.1 server for the router and the SLM server (see server.py)."""

from .server import (
    HTTPError,
    Request,
    Response,
    Server,
    StreamResponse,
    error_body,
    json_response,
)

__all__ = ["HTTPError", "Request", "Response", "Server", "StreamResponse", "error_body", "json_response"]
