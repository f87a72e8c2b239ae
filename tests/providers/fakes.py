"""Small, real HTTP servers on 127.0.0.1 that speak each provider's API closely enough for the
official SDKs (sendgrid, twilio, google-auth + requests): a ThreadingHTTPServer in a daemon
thread on a free port. Each records every request it receives and answers from a script:

* a FIFO of replies (``queue``) consumed by the API calls, then the provider's normal answer;
* for FCM, replies per device token (``per_token``), used for every request to that token;
* ``HANG``: read the request, never answer (the client sees a read timeout).

Nothing here imitates an SDK object: the SDKs run unmodified, over real sockets.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

HANG = "hang"  # a scripted reply: accept the request and never answer


@dataclass
class Reply:
    status: int
    body: Any = b""  # bytes, str, or anything JSON-serializable
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, bytes):
            return self.body, headers
        if isinstance(self.body, str):
            return self.body.encode(), headers
        headers.setdefault("Content-Type", "application/json")
        return json.dumps(self.body).encode(), headers


@dataclass
class Recorded:
    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: Message  # case-insensitive .get()
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class FakeServer:
    """The server; subclasses implement :meth:`answer`."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: list[Reply | str] = []
        self.on_request: Callable[[Recorded], None] | None = None  # runs before the answer
        self._lock = threading.Lock()
        self._release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                parts = urlsplit(self.path)
                req = Recorded(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                               self.headers, body)
                with fake._lock:
                    fake.requests.append(req)
                if fake.on_request is not None:
                    fake.on_request(req)
                reply = fake.answer(req)
                if reply == HANG:
                    fake._release.wait(30)
                    self.close_connection = True
                    return
                assert isinstance(reply, Reply)
                data, headers = reply.encoded()
                self.send_response(reply.status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def queue(self, *replies: Reply | str) -> None:
        """Answer the next API calls with these, in order."""
        with self._lock:
            self.script.extend(replies)

    def next_scripted(self) -> Reply | str | None:
        with self._lock:
            return self.script.pop(0) if self.script else None

    def answer(self, req: Recorded) -> Reply | str:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """A loopback URL on which nothing listens: connecting is refused at once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


# -- SendGrid v3 Mail Send -------------------------------------------------------------------

class SendGridFake(FakeServer):
    """``POST /v3/mail/send``: Bearer API key, JSON body; 202 with ``X-Message-Id`` (200 and no
    body in sandbox mode), as the real API answers."""

    def __init__(self, api_key: str = "SG.test-key") -> None:
        self.api_key = api_key
        self.mails: list[Recorded] = []  # accepted sends
        self.message_ids: list[str] = []  # the X-Message-Id of each accepted send
        super().__init__()

    def answer(self, req: Recorded) -> Reply | str:
        if (req.method, req.path) != ("POST", "/v3/mail/send"):
            return Reply(404, {"errors": [{"field": None, "message": "resource not found"}]})
        if req.header("Authorization") != f"Bearer {self.api_key}":
            return self.unauthorized()
        scripted = self.next_scripted()
        if scripted is not None:
            return scripted
        try:
            mail = req.json()
        except ValueError:
            return Reply(400, {"errors": [{"field": None, "message": "Bad Request"}]})
        problems = []
        if not (mail.get("from") or {}).get("email"):
            problems.append(("from.email", "The from email does not contain a valid address."))
        if not mail.get("personalizations") or not mail["personalizations"][0].get("to"):
            problems.append(("personalizations.0.to", "The to array is required for all personalization objects."))
        if not mail.get("subject"):
            problems.append(("subject", "The subject is required."))
        if not mail.get("content"):
            problems.append(("content", "Unless a valid template_id is provided, the content parameter is required."))
        if problems:
            return Reply(400, {"errors": [{"field": f, "message": m, "help": None} for f, m in problems]})
        self.mails.append(req)
        if ((mail.get("mail_settings") or {}).get("sandbox_mode") or {}).get("enable"):
            return Reply(200)
        message_id = secrets.token_urlsafe(16)
        self.message_ids.append(message_id)
        return Reply(202, b"", {"X-Message-Id": message_id})

    # scripted replies
    @staticmethod
    def rate_limited(after: int | None = 7, reset_in: int | None = None) -> Reply:
        headers = {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0"}
        if after is not None:
            headers["Retry-After"] = str(after)
        if reset_in is not None:
            headers["X-RateLimit-Reset"] = str(int(time.time()) + reset_in)
        return Reply(429, {"errors": [{"field": None, "message": "too many requests"}]}, headers)

    @staticmethod
    def invalid_address() -> Reply:
        return Reply(400, {"errors": [{"field": "personalizations.0.to.0.email",
                                       "message": "Does not contain a valid address.", "help": None}]})

    @staticmethod
    def unverified_sender() -> Reply:
        return Reply(403, {"errors": [{"field": "from", "message": "The from address does not match a verified "
                                       "Sender Identity. Mail cannot be sent until this error is resolved.",
                                       "help": None}]})

    @staticmethod
    def bad_request(field_name: str, message: str) -> Reply:
        return Reply(400, {"errors": [{"field": field_name, "message": message, "help": None}]})

    @staticmethod
    def server_error(status: int = 500) -> Reply:
        return Reply(status, {"errors": [{"field": None, "message": "internal error"}]})

    @staticmethod
    def unauthorized() -> Reply:
        return Reply(401, {"errors": [{"field": None, "help": None, "message":
                                       "The provided authorization grant is invalid, expired, or revoked"}]})


# -- Twilio Messages ------------------------------------------------------------------------

TWILIO_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Messages\.json$")


def _gsm_segments(body: str) -> int:
    return 1 if len(body) <= 160 else math.ceil(len(body) / 153)


class TwilioFake(FakeServer):
    """``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``: Basic auth (SID:token), form
    fields; 201 with the Message resource as JSON."""

    def __init__(self, account_sid: str = "AC" + "0" * 31 + "1", auth_token: str = "tw-token") -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[Recorded] = []  # accepted sends
        self.sids: list[str] = []  # the Message SIDs handed out, in order
        super().__init__()

    def answer(self, req: Recorded) -> Reply | str:
        m = TWILIO_PATH.match(req.path)
        if req.method != "POST" or m is None:
            return self.error(404, 20404, "The requested resource was not found")
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if req.header("Authorization") != expected or m.group(1) != self.account_sid:
            return self.error(401, 20003, "Authenticate")
        scripted = self.next_scripted()
        if scripted is not None:
            return scripted
        form = req.form()
        if not form.get("To"):
            return self.error(400, 21604, "A 'To' phone number is required.")
        if not form.get("Body"):
            return self.error(400, 21602, "Message body is required.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return self.error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message.")
        self.messages.append(req)
        sid = "SM" + secrets.token_hex(16)
        self.sids.append(sid)
        now = formatdate(usegmt=False)
        return Reply(201, {
            "account_sid": self.account_sid, "api_version": "2010-04-01", "body": form["Body"],
            "date_created": now, "date_sent": None, "date_updated": now, "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0", "num_segments": str(_gsm_segments(form["Body"])), "price": None,
            "price_unit": "USD", "sid": sid, "status": "accepted" if form.get("MessagingServiceSid") else "queued",
            "subresource_uris": {"media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}/Media.json"},
            "to": form["To"], "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        })

    @staticmethod
    def error(status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
        return Reply(status, {"code": code, "message": message, "status": status,
                              "more_info": f"https://www.twilio.com/docs/errors/{code}"}, dict(headers or {}))

    @classmethod
    def rate_limited(cls, after: int = 3) -> Reply:
        return cls.error(429, 20429, "Too Many Requests", {"Retry-After": str(after)})

    @classmethod
    def invalid_number(cls) -> Reply:
        return cls.error(400, 21211, "Invalid 'To' Phone Number: +1555000")

    @classmethod
    def unsubscribed(cls) -> Reply:
        return cls.error(400, 21610, "Attempt to send to unsubscribed recipient")

    @staticmethod
    def server_error(status: int = 500) -> Reply:
        return Reply(status, b"<html><body>Internal Server Error</body></html>", {"Content-Type": "text/html"})


# -- FCM HTTP v1 with the OAuth jwt-bearer exchange -----------------------------------------

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


def make_service_account(token_uri: str, project_id: str = "demo-proj") -> tuple[dict[str, Any], rsa.RSAPublicKey]:
    """A service-account JSON with a freshly generated RSA key, as the Google console gives it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {
        "type": "service_account", "project_id": project_id, "private_key_id": secrets.token_hex(20),
        "private_key": pem, "client_email": f"fcm-sender@{project_id}.iam.gserviceaccount.com",
        "client_id": "109876543210987654321", "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri, "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/fcm-sender",
        "universe_domain": "googleapis.com",
    }
    return info, key.public_key()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FcmFake(FakeServer):
    """``POST /token`` (the OAuth 2.0 jwt-bearer grant: checks the RS256 assertion against the
    service account's public key) and ``POST /v1/projects/{p}/messages:send`` (checks the Bearer
    token it issued). Replies per device token with :attr:`per_token`."""

    def __init__(self, project_id: str = "demo-proj") -> None:
        self.project_id = project_id
        self.public_key: rsa.RSAPublicKey | None = None
        self.client_email: str | None = None
        self.issued: list[str] = []  # access tokens handed out
        self.assertions: list[dict[str, Any]] = []  # the JWT claims of each exchange
        self.token_script: list[Reply] = []  # replies for the token endpoint, in order
        self.per_token: dict[str, Reply | str] = {}  # device token -> reply, every time
        self.sent: list[Recorded] = []  # messages accepted
        self._names = itertools.count(1)
        super().__init__()
        self.service_account, public_key = make_service_account(self.url + "/token", project_id)
        self.trust(self.service_account, public_key)

    def trust(self, info: Mapping[str, Any], public_key: rsa.RSAPublicKey) -> None:
        self.public_key = public_key
        self.client_email = str(info["client_email"])

    @property
    def sends(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith("/v1/")]

    @property
    def token_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/token"]

    def answer(self, req: Recorded) -> Reply | str:
        if req.method == "POST" and req.path == "/token":
            return self._token(req)
        if req.method == "POST" and req.path.startswith("/v1/projects/") and req.path.endswith("/messages:send"):
            return self._send(req)
        return self.error(404, "NOT_FOUND", None, "Not Found")

    def _token(self, req: Recorded) -> Reply:
        if self.token_script:
            return self.token_script.pop(0)
        form = req.form()
        if form.get("grant_type") != JWT_BEARER or "assertion" not in form:
            return Reply(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"})
        try:
            header_b64, claims_b64, sig_b64 = form["assertion"].split(".")
            header, claims = json.loads(_unb64(header_b64)), json.loads(_unb64(claims_b64))
            assert header.get("alg") == "RS256" and self.public_key is not None
            self.public_key.verify(_unb64(sig_b64), f"{header_b64}.{claims_b64}".encode(),
                                   padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, AssertionError, InvalidSignature):
            return Reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        if claims.get("iss") != self.client_email or claims.get("exp", 0) < time.time():
            return Reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT: iss or exp"})
        self.assertions.append(claims)
        token = f"ya29.fake-{len(self.issued) + 1}-{secrets.token_hex(4)}"
        self.issued.append(token)
        return Reply(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def _send(self, req: Recorded) -> Reply | str:
        auth = req.header("Authorization") or ""
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self.issued:
            return self.error(401, "UNAUTHENTICATED", None, "Request had invalid authentication credentials.")
        if req.path != f"/v1/projects/{self.project_id}/messages:send":
            return self.error(403, "PERMISSION_DENIED", None, "Permission denied on the project.")
        try:
            message = req.json()["message"]
        except (ValueError, KeyError, TypeError):
            return self.error(400, "INVALID_ARGUMENT", None, "Invalid JSON payload received.")
        targets = [k for k in ("token", "topic", "condition") if k in message]
        if len(targets) != 1:
            return self.error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
                              "Exactly one of token, topic or condition must be specified.")
        scripted = self.next_scripted() or self.per_token.get(message.get("token", ""))
        if scripted is not None:
            return scripted
        self.sent.append(req)
        return Reply(200, {"name": f"projects/{self.project_id}/messages/0:{next(self._names)}%fake"})

    # scripted replies
    @staticmethod
    def error(http: int, status: str, fcm_code: str | None, message: str,
              headers: Mapping[str, str] | None = None) -> Reply:
        details = [{"@type": FCM_ERROR_TYPE, "errorCode": fcm_code}] if fcm_code else []
        return Reply(http, {"error": {"code": http, "message": message, "status": status, "details": details}},
                     dict(headers or {}))

    @classmethod
    def unregistered(cls) -> Reply:
        return cls.error(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.")

    @classmethod
    def invalid_token(cls) -> Reply:
        reply = cls.error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
                          "The registration token is not a valid FCM registration token")
        reply.body["error"]["details"].append({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "message.token",
                                 "description": "The registration token is not a valid FCM registration token"}]})
        return reply

    @classmethod
    def invalid_payload(cls) -> Reply:
        return cls.error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
                         "Invalid value at 'message.data[0].value' (TYPE_STRING), 5")

    @classmethod
    def quota_exceeded(cls, after: int = 30) -> Reply:
        return cls.error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED",
                         "Quota exceeded for quota metric 'Send requests'", {"Retry-After": str(after)})

    @classmethod
    def unavailable(cls) -> Reply:
        return cls.error(503, "UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable.")


class Blackhole:
    """A loopback port whose accept queue is full: connection attempts get no answer at all, so
    a client sees a *connect* timeout (the request never left)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.fillers = []
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(self.listener.getsockname())
            except BlockingIOError:
                pass
            self.fillers.append(c)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def close(self) -> None:
        for c in self.fillers:
            c.close()
        self.listener.close()


# -- a partner's endpoint for the webhook plug-in channel -----------------------------------

class ReceiverFake(FakeServer):
    """Any JSON endpoint: 200 with ``X-Message-Id`` unless scripted."""

    def __init__(self) -> None:
        self.accepted: list[Recorded] = []
        super().__init__()

    def answer(self, req: Recorded) -> Reply | str:
        scripted = self.next_scripted()
        if scripted is not None:
            return scripted
        self.accepted.append(req)
        return Reply(200, {"ok": True}, {"X-Message-Id": f"msg-{len(self.accepted)}"})
