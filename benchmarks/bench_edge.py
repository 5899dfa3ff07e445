"""The live lane service's figures (docs/edge.md, deploy/sizing.md): `reid edge` run as its own
process on loopback, a simulated lane (gallery from sample/grocery/train, lane from .../val)
played as a live stream in a loop, its POS events posted in time, one pass after another.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_edge.py soak [--minutes 3] [--lanes 1] [--warmup 10]
        [--max-slope 5] [--work DIR]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_edge.py sizing [--seconds 60] [--grid 640x480@15,...]
        [--cpus 1,2] [--lanes 1,4]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_edge.py multilane [--seconds 60] [--grid 640x480@15]
        [--lanes 1,2,4,8]

soak: alert latency (from the item's last frame in the zone, the tracker's pass end, to its line
in events.jsonl; target p95 <= 1 s), frames read / processed / dropped, CPU used, and the
resident memory sampled every second, of one `reid edge` running --lanes lanes. Memory must stay
flat: the slope after warm-up (the first --warmup minutes, at most a third of the run) is the
least-squares line through the highest RSS of each minute, printed per lane with its standard error
and 95 % interval, and the run fails (exit status 1) when it is above --max-slope MB/hour/lane.
sizing: the same for each frame size and rate in --grid against each core count in --cpus (the
services pinned with taskset) and each number of lanes in --lanes run side by side on those
cores: what a box of that size keeps up with.
multilane: for each number of lanes in --lanes, those lanes in one `reid edge` process ([[lane]]
tables: one gallery and ONNX session) against as many single-lane processes side by side: resident
memory at the end of the run (RSS, and PSS, which counts pages shared between processes once) and
alert latency p95 over all lanes (target: 4 lanes in one process <= 50 % of the memory of 4
processes, alert p95 <= 1 s).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from retail_reid.cli import main as reid
from retail_reid.models.datasets import folder_set
from retail_reid.pipeline.harness.score import read_events, read_truth, score
from retail_reid.pipeline.harness.simulate import SimConfig, simulate

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample" / "grocery"
TOKEN = "bench-token"
LATENCY_TARGET_S = 1.0
MAX_SLOPE_MB_PER_HOUR = 5.0  # per lane, after warm-up: 70 MB over a 14-hour store day
ALERT_TYPES = ("non_scan", "product_switch", "unknown_item")
SCORED = ("non_scan", "product_switch", "scan_without_item")


def contention() -> str:
    """How busy the machine is: load average and the share of time tasks waited for a CPU (PSI)."""
    try:
        psi = Path("/proc/pressure/cpu").read_text().split()[1].split("=")[1]
        return f"load average {os.getloadavg()[0]:.1f}, CPU pressure {psi}% (tasks waiting for a core, last 10 s)"
    except (OSError, IndexError):
        return f"load average {os.getloadavg()[0]:.1f}"


def machine_counters() -> tuple[float, float, float]:
    """(wall time, microseconds some task waited for a CPU (PSI), CPU ticks stolen by the hypervisor)."""
    try:
        stall = float(Path("/proc/pressure/cpu").read_text().split()[4].split("=")[1])
    except (OSError, IndexError, ValueError):
        stall = float("nan")
    steal = float(Path("/proc/stat").read_text().split()[8])
    return time.time(), stall, steal


def busy_share(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    """How contended the machine was between two `machine_counters()` readings."""
    wall = max(after[0] - before[0], 1e-9)
    waited = (after[1] - before[1]) / 1e6 / wall
    stolen = (after[2] - before[2]) / os.sysconf("SC_CLK_TCK") / wall / (os.cpu_count() or 1)
    return f"{100 * waited:.0f}% / {100 * stolen:.0f}%"


def build_gallery(work: Path) -> Path:
    root = work / "gallery"
    if not (root / "CURRENT").exists():
        reid(["gallery", "init", str(root)])
        reid(["gallery", "import-folder", str(root), str(SAMPLE / "train")])
    return root


def make_scenario(work: Path, width: int, height: int, fps: float, passes: int, seed: int) -> Path:
    out = work / f"lane-{width}x{height}@{fps:g}-{passes}p-s{seed}"
    if not (out / "truth.json").exists():
        simulate(
            folder_set(SAMPLE / "val"),
            out,
            SimConfig(
                passes=passes,
                transactions=max(1, passes // 6),
                non_scan_rate=0.15,
                switch_rate=0.15,
                scan_without_item_rate=0.07,
                fps=fps,
                width=width,
                height=height,
                seed=seed,
            ),
        )
    return out


def _get(url: str) -> dict | str:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})  # GET /metrics needs it too
    with urllib.request.urlopen(req, timeout=30) as r:
        data = r.read()
        return json.loads(data) if r.headers.get("Content-Type", "").startswith("application/json") else data.decode()


def _post(url: str, obj: dict) -> int:
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status


def _pss_mb(pid: int) -> float:
    """Proportional set size: resident memory with each page shared by k processes counted 1/k."""
    line = next(x for x in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines() if x.startswith("Pss:"))
    return int(line.split()[1]) / 1024


def _lane_config(truth: dict, gallery: Path, state: Path, video: Path, queue_frames: int, lanes: int) -> str:
    """lane.toml: a single lane as deployed, or `lanes` [[lane]] tables (lane-0, ...) on the same video."""
    camera = f'source = "{video}"\nloop = true\nqueue_frames = {queue_frames}\n'
    head = f'zone = {json.dumps(truth["zone"])}\n[edge]\ngallery = "{gallery}"\nstate_dir = "{state}"\n'
    http = f'[edge.http]\nport = 0\ntoken = "{TOKEN}"\n'
    if lanes == 1:
        return head + 'lane = "bench"\n' + http + "[edge.camera]\n" + camera
    return head + http + "".join(f'\n[[lane]]\nname = "lane-{i}"\n[lane.camera]\n{camera}' for i in range(lanes))


def _proc_sample(pid: int) -> tuple[float, float]:
    """(resident MB, CPU seconds used so far) of a process."""
    rss = next(
        int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _histogram_quantile(metrics: str, name: str, q: float) -> float | None:
    """The upper bound of the bucket holding quantile q of a Prometheus histogram (its series,
    one per lane, summed)."""
    counts: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                bound = float(sample.labels["le"])  # "+Inf" included
                counts[bound] = counts.get(bound, 0.0) + sample.value
    buckets = sorted(counts.items())
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    return next(le for le, count in buckets if count >= q * total)


def run_service(
    work: Path,
    gallery: Path,
    scenario: Path,
    seconds: float,
    cpus: int | None,
    queue_frames: int,
    name: str,
    nice: int | None = None,
    lanes: int = 1,
) -> dict:
    """Run `reid edge` (one lane, or `lanes` lanes in the one process) for `seconds` with the POS posted in time."""
    truth = json.loads((scenario / "truth.json").read_text())
    pos = [json.loads(line) for line in (scenario / "pos.jsonl").read_text().splitlines()]
    video = scenario / truth["video"]
    cap = cv2.VideoCapture(str(video))
    duration = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) / truth["fps"]
    cap.release()
    run = work / "runs" / name
    state = run / "state"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    (run / "lane.toml").write_text(_lane_config(truth, gallery, state, video, queue_frames, lanes))
    states = [state] if lanes == 1 else [state / f"lane-{i}" for i in range(lanes)]
    pos_routes = ["/pos"] if lanes == 1 else [f"/lanes/lane-{i}/pos" for i in range(lanes)]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "REID_THREADS": str(cpus or os.cpu_count() or 1),
    }
    command = [
        sys.executable,
        "-m",
        "retail_reid",
        "edge",
        "--config",
        str(run / "lane.toml"),
        "--log-level",
        "warning",
    ]
    if cpus:
        command = ["taskset", "-c", f"0-{cpus - 1}", *command]
    if nice is not None:  # the priority a deployment gives the service (systemd Nice=); below 0 needs root
        command = ["nice", "-n", str(nice), *command]
    with open(run / "service.log", "wb") as log:  # the service holds its own copy of the file
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while True:
            try:
                info = json.loads((states[0] / "service.json").read_text())
                if info["pid"] == proc.pid:
                    break
            except (OSError, ValueError):
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"the service did not start: see {run / 'service.log'}")
            time.sleep(0.2)
        url = info["url"]
        while (origin := _clock_origin(_get(url + "/health"))) is None:  # type: ignore[arg-type]
            time.sleep(0.05)
        loops = int(seconds / duration) + 2
        schedule = sorted(
            (
                origin + k * duration + e["ts"],
                {**e, "ts": origin + k * duration + e["ts"], **({"txn": f"L{k}-{e['txn']}"} if "txn" in e else {})},
            )
            for k in range(loops)
            for e in pos
        )
        samples: list[tuple[float, float, float]] = []  # (seconds since start, RSS MB, CPU seconds)
        machine_before = machine_counters()
        start = time.time()
        next_sample = start
        while time.time() - start < seconds:
            now = time.time()
            while schedule and schedule[0][0] <= now:
                event = schedule.pop(0)[1]
                for route in pos_routes:
                    _post(url + route, event)
            if now >= next_sample:
                rss, cpu = _proc_sample(proc.pid)
                samples.append((now - start, rss, cpu))
                next_sample += 1.0
            time.sleep(0.01)
        machine = busy_share(machine_before, machine_counters())
        health = _get(url + "/health")
        metrics = _get(url + "/metrics")
        memory = {"rss_mb": _proc_sample(proc.pid)[0], "pss_mb": _pss_mb(proc.pid)}
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    records = [json.loads(line) for s in states for line in (s / "events.jsonl").read_text().splitlines()]
    return {
        "memory": memory,
        "records": records,
        "health": health,
        "metrics": metrics,
        "samples": samples,
        "exit": code,
        "origin": origin,
        "machine": machine,
        "duration": duration,
        "seconds": seconds,
        "scenario": scenario,
        "run": run,
    }


def _clock_origin(health: dict) -> float | None:
    """The camera clock's origin; with several lanes the latest lane's (all play the same video)."""
    cameras = [lane["camera"] for lane in health["lanes"]] if "lanes" in health else [health["camera"]]
    origins = [c.get("clock_origin") for c in cameras]
    return None if None in origins else max(origins)


def latency(result: dict) -> dict:
    """Seconds from the item's last frame in the zone (the tracker's pass end, camera clock = Unix
    time of that frame) to its alert being written."""
    values = np.array(
        [r["written_at"] - r["t_end"] for r in result["records"] if r["type"] in ALERT_TYPES and r.get("track_id")]
    )
    if not values.size:
        return {"n": 0}
    return {
        "n": int(values.size),
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
    }


def accuracy(result: dict) -> dict[str, tuple[int, int, int]]:
    """(truth, alerts, matched) per scored type over the loops played in full, summed over the lanes
    (each plays the scenario)."""
    truth = read_truth(result["scenario"] / "truth.json")
    origin, duration = result["origin"], result["duration"]
    full = int(result["seconds"] // duration)
    totals = {t: [0, 0, 0] for t in SCORED}
    lanes = sorted({r.get("lane", "") for r in result["records"]})
    for lane, k in ((lane, k) for lane in lanes for k in range(full)):
        lo = origin + k * duration
        part = [
            r
            for r in result["records"]
            if r["type"] != "basket" and r.get("lane", "") == lane and lo <= r["t_start"] < lo + duration
        ]
        path = result["run"] / f"loop{k}-{lane}.jsonl"
        path.write_text(
            "".join(json.dumps({**r, "t_start": r["t_start"] - lo, "t_end": r["t_end"] - lo}) + "\n" for r in part)
        )
        for s in score(truth, read_events(path), 1.0).types:
            if s.type in totals:
                totals[s.type][0] += s.truth
                totals[s.type][1] += s.alerts
                totals[s.type][2] += s.matched
    return {t: tuple(v) for t, v in totals.items()}  # type: ignore[misc]


def lane_frames(health: dict) -> dict[str, int]:
    """Frames read, processed and dropped, summed over the lanes."""
    lanes = health.get("lanes", [health])
    return {k: sum(lane["frames"][k] for lane in lanes) for k in ("read", "processed", "dropped")}


def frames_line(result: dict) -> str:
    f = lane_frames(result["health"])
    cpu = (result["samples"][-1][2] - result["samples"][0][2]) / max(
        result["samples"][-1][0] - result["samples"][0][0], 1e-9
    )
    fps = f["processed"] / result["seconds"]
    dropped = f["dropped"] / max(f["read"], 1)
    p95 = _histogram_quantile(result["metrics"], "reid_frame_processing_seconds", 0.95)
    age50 = _histogram_quantile(result["metrics"], "reid_frame_age_seconds", 0.5)
    age95 = _histogram_quantile(result["metrics"], "reid_frame_age_seconds", 0.95)
    return (
        f"frames read {f['read']}, processed {f['processed']} ({fps:.1f}/s), dropped {f['dropped']} "
        f"({100 * dropped:.1f}%); "
        f"frame processing p95 <= {1000 * p95:.0f} ms; frame age when processed p50 <= {1000 * age50:.0f} ms, "
        f"p95 <= {1000 * age95:.0f} ms (histogram buckets); CPU {cpu:.2f} cores, "
        f"{1000 * cpu * result['seconds'] / max(f['processed'], 1):.1f} CPU-ms per processed frame (decoding included)"
    )


def memory_slope(samples: list[tuple[float, float, float]], warmup_s: float) -> dict:
    """The growth of resident memory after warm-up: the least-squares line through the highest RSS
    of each whole minute after `warmup_s` (a minute's maximum, not every sample, so that the
    seconds within a minute, which move together, count once), in MB/hour, with its standard error
    (from the residuals) and the interval of two standard errors either side (about 95 %)."""
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    minutes = [m for m in range(int(t[-1] // 60)) if m * 60 >= warmup_s and ((t >= m * 60) & (t < m * 60 + 60)).any()]
    if len(minutes) < 3:
        return {"minutes": len(minutes)}
    hours = np.array(minutes, float) / 60
    peaks = np.array([rss[(t >= m * 60) & (t < m * 60 + 60)].max() for m in minutes])
    slope, intercept = np.polyfit(hours, peaks, 1)
    residuals = peaks - (slope * hours + intercept)
    se = math.sqrt(float(residuals @ residuals) / (len(peaks) - 2) / float(((hours - hours.mean()) ** 2).sum()))
    return {"minutes": len(peaks), "slope": slope, "se": se, "first": peaks[0], "last": peaks[-1]}


def cmd_soak(a: argparse.Namespace, work: Path) -> int:
    gallery = build_gallery(work)
    scenario = make_scenario(work, 640, 480, 15.0, a.passes, a.seed)
    seconds = a.minutes * 60
    print(
        f"soak: {a.minutes:g} min of {scenario.name} looped, {a.lanes} lane(s) in one process "
        f"({os.cpu_count()} CPUs; at start: {contention()}"
        f"{'' if a.nice is None else f'; service at nice {a.nice}'})"
    )
    result = run_service(work, gallery, scenario, seconds, a.cpus, a.queue_frames, "soak", a.nice, a.lanes)
    # (seconds since start, RSS MB, CPU seconds), every second: for another look at the run
    (result["run"] / "memory.json").write_text(json.dumps(result["samples"]))
    lat = latency(result)
    print(
        f"exit status after SIGTERM: {result['exit']}; "
        "during the run, time some task waited for a CPU / CPU time stolen "
        f"by the hypervisor: {result['machine']}"
    )
    print(frames_line(result))
    if lat["n"]:
        ok = "meets" if lat["p95"] <= LATENCY_TARGET_S else "MISSES"
        print(
            f"alert latency (item leaves the zone -> alert written), {lat['n']} alerts: p50 {lat['p50']:.3f} s, "
            f"p95 {lat['p95']:.3f} s, max {lat['max']:.3f} s ({ok} the {LATENCY_TARGET_S:g} s target)"
        )
    acc = accuracy(result)
    print(
        "accuracy over the loops played in full: "
        + ", ".join(f"{t} recall {m}/{n} precision {m}/{k}" for t, (n, k, m) in acc.items())
    )
    rss = np.array([s[1] for s in result["samples"]])
    t = np.array([s[0] for s in result["samples"]])
    minutes = [
        f"{rss[(t >= m * 60) & (t < (m + 1) * 60)].max():.1f}"
        for m in range(int(t[-1] // 60) + 1)
        if ((t >= m * 60) & (t < (m + 1) * 60)).any()
    ]
    print(f"resident memory, highest in each minute (MB): {' '.join(minutes)}")
    warmup_s = min(a.warmup * 60, seconds / 3)
    fit = memory_slope(result["samples"], warmup_s)
    print(f"events: {len(result['records'])} lines; run folder {result['run']}; at the end: {contention()}")
    if fit["minutes"] < 3:
        print(f"memory slope: not measured ({fit['minutes']} whole minutes after a {warmup_s / 60:g}-minute warm-up)")
        return 1
    slope, se = fit["slope"] / a.lanes, fit["se"] / a.lanes
    verdict = "within" if slope <= a.max_slope else "ABOVE"
    print(
        f"memory slope after a {warmup_s / 60:g}-minute warm-up, over {fit['minutes']} minutes "
        f"({fit['first']:.1f} -> {fit['last']:.1f} MB): {fit['slope']:+.1f} MB/hour in all, {slope:+.2f} MB/hour/lane "
        f"(standard error {se:.2f}; {slope - 2 * se:+.2f} to {slope + 2 * se:+.2f} within two); "
        f"{verdict} the bound of {a.max_slope:g} MB/hour/lane"
    )
    return 0 if slope <= a.max_slope else 1


def cmd_sizing(a: argparse.Namespace, work: Path) -> int:
    gallery = build_gallery(work)
    print(
        f"sizing: {a.seconds:g} s per row ({os.cpu_count()} CPUs; at start: {contention()}"
        f"{'' if a.nice is None else f'; service at nice {a.nice}'})"
    )
    print(
        "| frames | cores | lanes | processed / camera fps (worst lane) | dropped (worst) "
        "| CPU used (cores, all lanes) | CPU-ms per frame | frame age p95 (worst) | alert latency p95 (worst) "
        "| recall (non_scan, switch) | machine: CPU wait / stolen |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for spec in a.grid.split(","):
        size, fps = spec.split("@")
        w, h = (int(v) for v in size.split("x"))
        scenario = make_scenario(work, w, h, float(fps), a.passes, a.seed)
        for cpus in (int(c) for c in a.cpus.split(",")):
            for lanes in (int(n) for n in a.lanes.split(",")):
                lane = functools.partial(
                    run_service, work, gallery, scenario, a.seconds, cpus, a.queue_frames, nice=a.nice
                )
                names = [f"size-{spec}-{cpus}c-{lanes}l-{i}" for i in range(lanes)]
                with ThreadPoolExecutor(lanes) as pool:  # the lanes of one box, side by side on the same cores
                    results = list(pool.map(lane, names))
                print(sizing_row(f"{w}x{h} @ {fps}", float(fps), cpus, results, a.seconds), flush=True)
    return 0


def cmd_multilane(a: argparse.Namespace, work: Path) -> int:
    gallery = build_gallery(work)
    size, fps = a.grid.split(",")[0].split("@")
    w, h = (int(v) for v in size.split("x"))
    scenario = make_scenario(work, w, h, float(fps), a.passes, a.seed)
    print(
        f"multilane: {a.seconds:g} s per row, {scenario.name} looped ({os.cpu_count()} CPUs; at start: {contention()})"
    )
    print(
        "| lanes | one process: RSS / PSS | single-lane processes: RSS / PSS (sum) "
        "| one process / processes (RSS, PSS) "
        "| alert p95 one process / processes (alerts) | machine during the runs: load, CPU wait / stolen |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for lanes in (int(n) for n in a.lanes.split(",")):
        run = functools.partial(run_service, work, gallery, scenario, a.seconds, None, a.queue_frames)
        one = run(f"multi-{lanes}l", lanes=lanes)
        load_one = os.getloadavg()[0]
        with ThreadPoolExecutor(lanes) as pool:  # as many processes side by side
            many = list(pool.map(run, [f"single-{lanes}l-{i}" for i in range(lanes)]))
        load_many = os.getloadavg()[0]
        rss = sum(r["memory"]["rss_mb"] for r in many)
        pss = sum(r["memory"]["pss_mb"] for r in many)
        lat_one = latency(one)
        lat_many = latency({"records": [rec for r in many for rec in r["records"]]})
        p95 = " / ".join(f"{x['p95']:.2f} s" if x["n"] else "none" for x in (lat_one, lat_many))
        print(
            f"| {lanes} | {one['memory']['rss_mb']:.0f} / {one['memory']['pss_mb']:.0f} MB | {rss:.0f} / {pss:.0f} MB "
            f"| {100 * one['memory']['rss_mb'] / rss:.0f}%, {100 * one['memory']['pss_mb'] / pss:.0f}% "
            f"| {p95} ({lat_one['n']}, {lat_many['n']}) "
            f"| {load_one:.1f} {one['machine']}; {load_many:.1f} {many[0]['machine']} |",
            flush=True,
        )
    print(f"at the end: {contention()}")
    return 0


def _ms(seconds: float) -> str:
    return "> 5 s" if math.isinf(seconds) else f"{1000 * seconds:.0f} ms"  # the histogram's last bucket is 5 s


def sizing_row(frames: str, fps: float, cpus: int, results: list[dict], seconds: float) -> str:
    cores, processed, dropped, ages, lats = 0.0, [], [], [], []
    recall = {t: [0, 0] for t in ("non_scan", "product_switch")}
    for r in results:
        f = lane_frames(r["health"])
        cores += (r["samples"][-1][2] - r["samples"][0][2]) / max(r["samples"][-1][0] - r["samples"][0][0], 1e-9)
        processed.append(f["processed"])
        dropped.append(f["dropped"] / max(f["read"], 1))
        ages.append(_histogram_quantile(r["metrics"], "reid_frame_age_seconds", 0.95))
        lat = latency(r)
        lats.append(lat["p95"] if lat["n"] else float("nan"))
        for t, (n, _, m) in accuracy(r).items():
            if t in recall:
                recall[t][0] += m
                recall[t][1] += n
    per_frame = cores * seconds / max(sum(processed), 1)  # CPU seconds per processed frame, decoding included
    return (
        f"| {frames} | {cpus} | {len(results)} | {min(processed) / seconds:.1f} / {fps:g} | "
        f"{100 * max(dropped):.0f}% | {cores:.2f} "
        f"| {1000 * per_frame:.1f} | {_ms(max(ages))} | {max(lats):.2f} s | "
        + ", ".join(f"{m}/{n}" for m, n in recall.values())
        + f" | {results[0]['machine']} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    soak = sub.add_parser("soak")
    soak.add_argument("--minutes", type=float, default=3.0)
    soak.add_argument("--cpus", type=int, help="pin the service to this many cores (taskset; default: all)")
    soak.add_argument("--lanes", type=int, default=1, help="lanes in the one `reid edge` process")
    soak.add_argument(
        "--warmup", type=float, default=10.0, help="minutes left out of the memory slope (at most a third of the run)"
    )
    soak.add_argument(
        "--max-slope",
        type=float,
        default=MAX_SLOPE_MB_PER_HOUR,
        help="fail when resident memory grows faster than this after warm-up (MB/hour/lane)",
    )
    sizing = sub.add_parser("sizing")
    sizing.add_argument("--seconds", type=float, default=60.0)
    sizing.add_argument("--grid", default="640x480@15,640x480@30,1280x720@15")
    sizing.add_argument("--cpus", default="1,2", help="core counts to pin the service to, comma-separated")
    sizing.add_argument("--lanes", default="1", help="lanes run side by side on those cores, comma-separated counts")
    multilane = sub.add_parser("multilane")
    multilane.add_argument("--seconds", type=float, default=60.0)
    multilane.add_argument("--grid", default="640x480@15", help="the frame size and rate of every lane")
    multilane.add_argument("--lanes", default="1,2,4,8", help="lane counts, comma-separated")
    for p in (soak, sizing, multilane):
        p.add_argument("--passes", type=int, default=16, help="item passes per scenario (looped)")
        p.add_argument("--seed", type=int, default=5)
        p.add_argument("--queue-frames", type=int, default=8, help="the service's frame queue (its default: 8)")
        p.add_argument("--nice", type=int, help="run the service at this niceness (e.g. -5 as the systemd unit does)")
        p.add_argument("--work", help="keep the gallery, scenarios and runs here (default: a temporary folder)")
    a = ap.parse_args()
    work = Path(a.work).resolve() if a.work else Path(tempfile.mkdtemp(prefix="bench_edge_"))  # configs name it
    work.mkdir(parents=True, exist_ok=True)
    return {"soak": cmd_soak, "sizing": cmd_sizing, "multilane": cmd_multilane}[a.cmd](a, work)


if __name__ == "__main__":
    sys.exit(main())
