"""The console's Flask application: sign-in required on every page, a CSRF token on every write
(Flask-WTF), a session cookie that scripts cannot read and other sites cannot send, request bodies
capped before they are read, and security headers that keep every asset on this server."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

from flask import Flask, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wrappers import Response

from retail_reid.durable import replace_atomically
from retail_reid.errors import ReidError
from retail_reid.pipeline.console import alert_views, auth_views, formatting, gallery_views, lane_reference_views
from retail_reid.pipeline.console.alerts import open_folders
from retail_reid.pipeline.console.gallery_access import GalleryAccess
from retail_reid.pipeline.console.reference_decisions import DB_NAME as DECISIONS_DB
from retail_reid.pipeline.console.reference_decisions import ReferenceDecisions
from retail_reid.pipeline.console.sessions import DB_NAME as SESSIONS_DB
from retail_reid.pipeline.console.sessions import MAX_AGE_S, SessionStore
from retail_reid.pipeline.console.settings import ConsoleError, ConsoleSettings
from retail_reid.pipeline.console.sku_urls import SkuConverter
from retail_reid.pipeline.console.state import EXTENSION, SESSION_OPERATOR, SESSION_TOKEN, ConsoleState, state
from retail_reid.pipeline.console.throttle import SignInThrottle
from retail_reid.pipeline.console.users import OperatorsFile
from retail_reid.pipeline.console.verdicts import DB_NAME, VerdictStore

SECRET_FILE = "session.key"
OPEN_ENDPOINTS = frozenset({"auth.login", "static"})
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'self'; "
    "script-src 'self'; "
    "form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _secret_key(data: Path) -> bytes:
    """The key that signs session cookies, kept in the data folder so a restart keeps operators signed in."""
    path = data / SECRET_FILE
    try:
        if not path.exists():
            data.mkdir(mode=0o700, parents=True, exist_ok=True)  # verdicts and the key: the console's alone
            replace_atomically(path, secrets.token_bytes(32), "session-key")
            path.chmod(0o600)
        return path.read_bytes()
    except OSError as e:
        raise ConsoleError(f"--data {data}: cannot keep the session key there ({e.strerror or e})") from None


def _signed_in() -> bool:
    """True while the cookie's session is live on the server, and its operator's."""
    token, name = session.get(SESSION_TOKEN), session.get(SESSION_OPERATOR)
    if not isinstance(token, str) or not isinstance(name, str):
        return False
    return state().sessions.operator(token, state().operators.current().credential) == name


def create_app(settings: ConsoleSettings) -> Flask:
    """The application over the given folders; raises ReidError for a setting it cannot use."""
    settings.check()
    operators = OperatorsFile(settings.users)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=_secret_key(settings.data),
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        MAX_FORM_MEMORY_SIZE=settings.max_upload_bytes,
        SESSION_COOKIE_NAME="reid_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=MAX_AGE_S),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session: a page left open still works
        WTF_CSRF_SSL_STRICT=settings.secure_cookies,
    )
    app.extensions[EXTENSION] = ConsoleState(
        settings=settings,
        folders=open_folders(settings.lanes, settings.replays),
        verdicts=VerdictStore(settings.data / DB_NAME),
        operators=operators,
        sessions=SessionStore(settings.data / SESSIONS_DB, settings.session_idle_s),
        gallery=GalleryAccess(settings.gallery, settings.data),
        throttle=SignInThrottle(),
        decisions=ReferenceDecisions(settings.data / DECISIONS_DB),
    )
    formatting.install(app, settings.zone)
    app.url_map.converters["sku"] = SkuConverter
    for module in (auth_views, alert_views, gallery_views, lane_reference_views):
        app.register_blueprint(module.blueprint)

    @app.before_request
    def require_operator() -> Response | tuple[str, int] | None:
        if request.endpoint in OPEN_ENDPOINTS or _signed_in():
            return None
        if SESSION_TOKEN in session:  # ended (idle, operator removed or re-passworded): forget it, keep the rest
            session.pop(SESSION_TOKEN)  # (the sign-in form's CSRF token lives in the session too)
            session.pop(SESSION_OPERATOR, None)
        if request.method in ("GET", "HEAD"):
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return render_template("error.html", message="sign in first: this change needs a signed-in operator"), 401

    CSRFProtect(app)  # after the sign-in check: a signed-out write is refused as such, before its token is read

    @app.after_request
    def harden(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(CSRFError)
    def csrf_refused(e: CSRFError) -> tuple[str, int]:
        return render_template("error.html", message=f"refused: {e.description} (reload the page and try again)"), 400

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(e: RequestEntityTooLarge) -> tuple[str, int]:
        limit = settings.max_upload_bytes / 2**20
        return render_template("error.html", message=f"refused: the upload is over the {limit:g} MiB limit"), 413

    @app.errorhandler(ReidError)
    def user_error(e: ReidError) -> tuple[str, int]:
        return render_template("error.html", message=str(e)), 400

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> tuple[str, int]:
        return render_template("error.html", message=f"{e.code} {e.name}: {e.description}"), e.code or 500

    return app
