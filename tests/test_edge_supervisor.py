"""No thread of the edge service dies unnoticed: `reid edge` runs as a separate process whose webhook
thread is made to raise (a fault switch file, set by the test, planted into `WebhookSender.run`), and
/health must name the thread (503), /metrics count its deaths and restarts, the thread run again
once the fault is gone, and a thread that keeps dying stop the process with a non-zero status (for
systemd's Restart=on-failure). The supervisor's back-off and limit are also checked on their own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from edge_fixtures import Receiver, metrics, wait_until

from retail_reid.errors import ReidError
from retail_reid.pipeline.edge.supervisor import Supervisor
from retail_reid.pipeline.edge.worker import Worker

REPO = Path(__file__).resolve().parents[1]
CAMERA = REPO / "sample" / "grocery" / "iconic"  # an image folder, played once: the camera just ends
TOKEN = "sup-token-3c1d"
SLOW = 180.0  # bound on any wait for the service (start-up on a loaded machine included)
# `reid edge`, with WebhookSender.run raising while the fault switch file exists.
LAUNCHER = """
import os, sys
from pathlib import Path
from retail_reid.cli import main
from retail_reid.pipeline.edge.webhook import WebhookSender
switch, run = Path(os.environ["FAULT_SWITCH"]), WebhookSender.run
def faulty(self):
    if switch.exists():
        raise RuntimeError("planted fault")
    run(self)
WebhookSender.run = faulty
sys.exit(main(sys.argv[1:]))
"""


class Service:
    """`reid edge` through the launcher, with its webhook pointed at a live receiver."""

    def __init__(self, tmp_path: Path, gallery: Path, receiver: Receiver, restart_limit: int):
        self.switch = tmp_path / "fault"
        self.switch.touch()
        self.state = tmp_path / "state"
        config = tmp_path / "lane.toml"
        config.write_text(
            f'zone = [0, 0, 100, 100]\n[edge]\ngallery = "{gallery}"\nstate_dir = "{self.state}"\n'
            f"restart_backoff_s = 0.2\nrestart_limit = {restart_limit}\n"
            f'[edge.camera]\nsource = "{CAMERA}"\n[edge.http]\nport = 0\ntoken = "{TOKEN}"\n'
            f'[edge.webhook]\nurl = "{receiver.url}"\n'
        )
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "FAULT_SWITCH": str(self.switch)}
        self.log = tmp_path / "service.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, "edge", "--config", str(config)],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.url = ""

    def ready(self) -> bool:
        try:
            info = json.loads((self.state / "service.json").read_text())
        except (OSError, ValueError):
            return self.proc.poll() is not None  # exited: stop waiting
        self.url = info["url"]
        return True

    def get(self, path: str) -> tuple[int, str]:
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def health(self) -> tuple[int, dict]:
        code, body = self.get("/health")
        return code, json.loads(body)

    def metric(self, name: str) -> float:
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise AssertionError(f"{name} not in /metrics")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(SLOW)


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def gallery(built_gallery, tmp_path_factory) -> Path:
    """A copy of the shared gallery: a service killed mid-run may leave its database's WAL files behind."""
    dest = tmp_path_factory.mktemp("supervised-gallery") / "gallery"
    shutil.copytree(built_gallery, dest)
    return dest


def test_a_dead_webhook_thread_is_named_in_health_counted_and_restarted(tmp_path, gallery, receiver):
    service = Service(tmp_path, gallery, receiver, restart_limit=100)
    try:
        assert wait_until(service.ready, SLOW, 0.1) and service.proc.poll() is None, service.log.read_text()
        deaths = 'reid_thread_deaths_total{thread="webhook"}'
        assert wait_until(lambda: service.metric(deaths) >= 2, SLOW)  # died, restarted, died again
        code, body = service.health()
        assert code == 503 and body["status"] == "failing"
        assert any(p.startswith("webhook thread died (RuntimeError: planted fault)") for p in body["problems"])
        assert service.metric('reid_thread_restarts_total{thread="webhook"}') >= 1
        assert service.metric('reid_thread_deaths_total{thread="camera"}') == 0

        service.switch.unlink()  # the fault is gone: the next restart stays up
        assert wait_until(lambda: not any("thread died" in p for p in service.health()[1]["problems"]), SLOW)
        code, body = service.health()
        assert code == 200 and body["status"] != "failing", body
        assert "thread died" in service.log.read_text()
        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(SLOW) == 0
    finally:
        service.stop()


def test_a_thread_that_keeps_dying_stops_the_service_with_a_non_zero_status(tmp_path, gallery, receiver):
    service = Service(tmp_path, gallery, receiver, restart_limit=2)
    try:
        assert service.proc.wait(SLOW) == 1
        log = service.log.read_text()
        assert "webhook thread died 3 times" in log and "restart_limit 2" in log
    finally:
        service.stop()


class Flaky(Worker):
    """A thread that raises `error` while `fail` is set, else runs until asked to stop."""

    def __init__(self, error: BaseException):
        super().__init__("webhook")
        self.error = error
        self.fail = threading.Event()
        self.fail.set()
        self.runs = 0

    def run(self) -> None:
        self.runs += 1
        if self.fail.is_set():
            raise self.error
        self.wait(3600)


def test_the_supervisor_backs_off_doubling_and_gives_up_after_its_limit():
    m = metrics()
    worker = Flaky(RuntimeError("boom"))
    sup = Supervisor(backoff_s=10.0, limit=2)
    sup.watch(worker, m, "t1")
    worker.start()
    assert wait_until(lambda: not worker.alive)
    assert sup.check(now=1000.0)  # noticed: restart due at 1010
    assert sup.problems("t1") == ["webhook thread died (RuntimeError: boom); restart 1 of 2 pending"]
    assert sup.problems(None) == []
    assert sup.check(now=1009.0) and worker.runs == 1  # not yet
    assert sup.check(now=1010.0)
    assert wait_until(lambda: worker.runs == 2 and not worker.alive)
    assert sup.check(now=1011.0)  # second death: restart due 20 s later
    assert sup.check(now=1030.0) and worker.runs == 2
    assert sup.check(now=1031.0)
    assert wait_until(lambda: worker.runs == 3 and not worker.alive)
    assert not sup.check(now=1032.0)  # a third death within 10 minutes: over the limit
    assert "died 3 times" in str(sup.fatal)
    assert m.thread_deaths.value("webhook") == 3 and m.thread_restarts.value("webhook") == 2


def test_a_user_error_in_a_thread_stops_the_service_without_restarts():
    worker = Flaky(ReidError("zone outside the frame"))
    sup = Supervisor(backoff_s=0.1, limit=5)
    sup.watch(worker, metrics(), "t1")
    worker.start()
    assert wait_until(lambda: not worker.alive)
    assert not sup.check(now=10.0)
    assert isinstance(sup.fatal, ReidError)
    assert not sup.check(now=100.0) and worker.runs == 1
    assert sup.problems("t1") == ["webhook thread died (zone outside the frame)"]
