"""Signing in and out. A successful sign-in starts a fresh session (no session fixation), kept
server-side (`sessions.SessionStore`) so that signing out ends it for every copy of the cookie;
`next` only ever leads to a page of this console."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from retail_reid.pipeline.console.state import SESSION_OPERATOR, SESSION_TOKEN, state

blueprint = Blueprint("auth", __name__)
MAX_FIELD = 256


def _local(target: str | None) -> str:
    """`target` if it is a path on this server, else the alerts page."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("alerts.index")


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> str | Response | tuple[str, int]:
    next_page = request.values.get("next", "")
    if request.method == "GET":
        return render_template("login.html", next=next_page, error=None)
    name = request.form.get("operator", "")[:MAX_FIELD]
    password = request.form.get("password", "")[:MAX_FIELD]
    address = request.remote_addr or ""
    wait = state().throttle.wait_s(address, name)
    if wait > 0:
        error = f"too many failed sign-ins for {name!r}; try again in {wait:.0f} s"
        return render_template("login.html", next=next_page, error=error), 429
    operators = state().operators.current()
    if not operators.check(name, password):
        state().throttle.failed(address, name)
        return render_template("login.html", next=next_page, error="unknown operator or wrong password"), 401
    state().throttle.succeeded(address, name)
    credential = operators.credential(name)
    assert credential is not None  # the password was just checked
    session.clear()
    session[SESSION_OPERATOR] = name
    session[SESSION_TOKEN] = state().sessions.start(name, credential)
    session.permanent = True
    return redirect(_local(next_page), 303)


@blueprint.route("/logout", methods=["POST"])
def logout() -> Response:
    token = session.get(SESSION_TOKEN)
    if isinstance(token, str):
        state().sessions.end(token)
    session.clear()
    return redirect(url_for("auth.login"), 303)
