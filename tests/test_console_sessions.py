"""Console sessions end for real: a copy of the cookie taken before sign-out, before the operator was
removed or before their password changed opens nothing and records no verdict; an idle session
ends after its idle time; a restart keeps live sessions (Flask's test client, the real app)."""

from __future__ import annotations

from pathlib import Path

import pytest
from console_fixtures import PASSWORDS, make_settings
from console_fixtures import csrf_token as _token
from console_fixtures import sign_in as _sign_in

from retail_reid.pipeline.console.sessions import DB_NAME, TOUCH_EVERY_S, SessionStore
from retail_reid.pipeline.console.settings import ConsoleError
from retail_reid.pipeline.console.users import add_operator, remove_operator

pytest.importorskip("flask")

from retail_reid.pipeline.console.app import create_app

COOKIE = "reid_console"
LANE_ALERT = "/alerts/lane-1/lane-1-9f3a1c2e-2"


@pytest.fixture
def settings(tmp_path: Path, gallery_dir: Path):
    return make_settings(tmp_path, gallery_dir)


@pytest.fixture
def app(settings):
    return create_app(settings)


def _copy_of(client, app):
    """A second client holding a copy of `client`'s session cookie, as a thief would."""
    thief = app.test_client()
    thief.set_cookie(COOKIE, client.get_cookie(COOKIE).value)
    return thief


def _verdict(client) -> int:
    form = {"csrf_token": _token(client, LANE_ALERT), "decision": "confirmed", "note": ""}
    return client.post(f"{LANE_ALERT}/verdict", data=form).status_code


def _opens(client) -> bool:
    return client.get("/alerts").status_code == 200


def test_a_cookie_copied_before_sign_out_opens_nothing_after_it(app):
    alice = app.test_client()
    _sign_in(alice)
    thief = _copy_of(alice, app)
    assert _opens(thief) and _verdict(thief) == 303  # the copy works while the session lives
    form = {"csrf_token": _token(thief, LANE_ALERT), "decision": "confirmed", "note": ""}
    assert alice.post("/logout", data={"csrf_token": _token(alice, "/alerts")}).status_code == 303
    assert thief.get("/alerts").status_code == 302 and thief.get(LANE_ALERT).status_code == 302
    assert thief.post(f"{LANE_ALERT}/verdict", data=form).status_code == 401
    assert not _opens(alice)


def test_a_request_made_while_signed_out_keeps_the_sign_in_forms_token(app):
    """A browser asks for /favicon.ico beside the sign-in page: that signed-out request must not drop
    the session that holds the form's CSRF token, or the sign-in is refused."""
    browser = app.test_client()
    form = {"csrf_token": _token(browser), "operator": "alice", "password": PASSWORDS["alice"]}
    assert browser.get("/favicon.ico").status_code == 302
    assert browser.post("/login", data=form).status_code == 303 and _opens(browser)


def test_removing_an_operator_or_changing_their_password_ends_their_sessions(app, settings):
    alice, bob = app.test_client(), app.test_client()
    _sign_in(alice)
    _sign_in(bob, "bob")
    add_operator(settings.users, "alice", "a-new-password-3")
    assert not _opens(alice) and _opens(bob)
    _sign_in(bob, "bob")
    remove_operator(settings.users, "bob")
    assert not _opens(bob)
    form = {"csrf_token": _token(bob), "operator": "bob", "password": PASSWORDS["bob"]}
    assert bob.post("/login", data=form).status_code == 401
    alice.post("/login", data={"csrf_token": _token(alice), "operator": "alice", "password": "a-new-password-3"})
    assert _opens(alice)


def test_the_last_operator_cannot_be_removed_and_an_unknown_one_is_named(settings):
    with pytest.raises(ConsoleError, match="no such operator"):
        remove_operator(settings.users, "carol")
    remove_operator(settings.users, "bob")
    with pytest.raises(ConsoleError, match="the last operator"):
        remove_operator(settings.users, "alice")


def test_a_restart_keeps_live_sessions_and_forgets_ended_ones(app, settings):
    alice = app.test_client()
    _sign_in(alice)
    restarted = create_app(settings)
    again = _copy_of(alice, restarted)
    assert _opens(again)
    alice.post("/logout", data={"csrf_token": _token(alice, "/alerts")})
    assert not _opens(_copy_of(again, create_app(settings)))


def test_an_idle_session_ends_and_a_used_one_lives_until_its_maximum_age(tmp_path):
    store = SessionStore(tmp_path / DB_NAME, idle_s=600.0, max_age_s=3600.0)
    current = {"alice": "c1"}.get
    idle = store.start("alice", "c1", now=0.0)
    assert store.operator(idle, current, now=599.0) == "alice"
    assert store.operator(idle, current, now=599.0 + 601.0) is None  # idle since its last use at 599
    assert store.operator(idle, current, now=10.0) is None  # ended for good
    used = store.start("alice", "c1", now=0.0)
    t = 0.0
    while t + TOUCH_EVERY_S < 3600.0:
        t += TOUCH_EVERY_S
        assert store.operator(used, current, now=t) == "alice"
    assert store.operator(used, current, now=3601.0) is None
    assert store.operator("not-a-token", current, now=1.0) is None


def test_the_idle_time_is_a_setting_with_bounds(tmp_path, gallery_dir):
    with pytest.raises(ConsoleError, match="--session-idle-minutes"):
        make_settings(tmp_path, gallery_dir, session_idle_minutes=0.5)
