"""gunicorn's logger without its access log (the roles write their own JSON line per request)."""

from gunicorn.glogging import Logger


class NoAccessLogger(Logger):
    def access(self, resp, req, environ, request_time) -> None:
        return None
