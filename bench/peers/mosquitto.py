"""Mosquitto, the plain-broker yardstick: QoS 1, 1 KiB payloads, the same fan-out shapes.

Mosquitto neither encrypts nor stores each message durably (its persistence is a
periodic snapshot; here it is off), so its figures are the speed of relaying
alone.  The broker is Debian's package (``apt-get install mosquitto
libmosquitto-dev`` when it is missing and we are root; otherwise the peer is
skipped); the load comes from ``bench/mqtt_load.c``, our own C program against
libmosquitto, compiled into ``bench/.peers/`` and run as separate processes, so
that the figures measure the broker rather than a Python MQTT client.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Final

from bench.peers.common import (
    BENCH,
    GROUP,
    LATENCY_SECONDS,
    PAYLOAD,
    PEERS,
    RATES,
    SENDERS,
    WINDOW,
    Process,
    Skipped,
    Window,
    children_cpu_seconds,
    free_port,
    loadavg,
    read_us_samples,
    wait_for_port,
)

HOME: Final = PEERS / "mosquitto"
SOURCE: Final = BENCH / "mqtt_load.c"
BINARY: Final = PEERS / "mqtt_load"
HEADER: Final = Path("/usr/include/mosquitto.h")
#: libmosquitto opens a socket pair beside each connection, so one process holds only so many.
IDLE_PER_PROCESS: Final = 5000
#: Messages per publisher in the saturating runs, and in all per fan-out: sized for at least
#: ``SATURATE_SECONDS`` (10 s) at the rates of 2026-11-22 (87,592 posts/s; 86,064 and 84,524
#: deliveries/s), the C load generator being count-based.
THROUGHPUT_COUNT: Final = 20_000
FANOUT_MESSAGES: Final = {10: 100_000, 50: 20_000}


def _mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.access(p, os.X_OK)), None
    )


def install() -> tuple[str, str]:
    """Debian's mosquitto and libmosquitto-dev, then our load generator; (broker path, version)."""
    if _mosquitto_binary() is None or not HEADER.exists():
        apt = shutil.which("apt-get")
        if apt is None:
            raise Skipped("mosquitto is not installed and there is no apt-get to install it")
        if os.geteuid() != 0:
            raise Skipped("mosquitto is not installed and installing it with apt-get needs root")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        command = [apt, "install", "-y", "-q", "mosquitto", "libmosquitto-dev"]
        if subprocess.run(command, env=env, capture_output=True, check=False).returncode != 0:
            subprocess.run([apt, "update", "-q"], env=env, capture_output=True, check=False)
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise Skipped(f"apt-get install mosquitto failed: {done.stderr.strip()[-300:]}")
    broker = _mosquitto_binary()
    if broker is None or not HEADER.exists():
        raise Skipped("mosquitto or its header is still missing after apt-get install")
    gcc = shutil.which("gcc")
    if gcc is None:
        raise Skipped("no gcc to compile the load generator bench/mqtt_load.c")
    if not BINARY.exists() or BINARY.stat().st_mtime < SOURCE.stat().st_mtime:
        BINARY.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [gcc, "-O2", "-Wall", "-Wextra", "-o", str(BINARY), str(SOURCE), "-lmosquitto"],
            check=True,
        )
    out = subprocess.run([broker, "-h"], capture_output=True, text=True, check=False)
    version = next((ln for ln in (out.stdout + out.stderr).splitlines() if "version" in ln), "unknown")
    return broker, version.replace("mosquitto version", "").strip() + " (Debian package)"


def _config(port: int) -> Path:
    """Loopback only, anonymous, no persistence; queues big enough that nothing is dropped."""
    HOME.mkdir(parents=True, exist_ok=True)
    path = HOME / "mosquitto.conf"
    path.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_connections -1\n"
        "max_queued_messages 100000\n"  # the default 1000 would drop QoS 1 messages under this load
        "max_inflight_messages 0\n"  # no cap on unacknowledged QoS 1 messages towards a subscriber
        "set_tcp_nodelay true\n"
        "log_dest stderr\n"
        "log_type error\n"
        "log_type warning\n"
    )
    return path


class Mosquitto:
    """One broker process, and the shapes of ``common`` as mqtt_load runs against it."""

    name = "mosquitto"
    latency_rates: tuple[int, ...] = RATES

    def __init__(self) -> None:
        broker, self.version = install()
        self.port = free_port()
        self.process = Process([broker, "-c", _config(self.port)], HOME / "mosquitto.log")
        self.runs = 0
        try:
            wait_for_port(self.port, self.process.proc, 30)
        except BaseException:
            self.process.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.stop()

    def _prefix(self) -> str:
        self.runs += 1  # a fresh topic tree per run: nothing left over from the last one
        return f"bench/{self.runs}"

    def _load(self, *args: object) -> list[str]:
        return [str(BINARY), *(str(a) for a in args)]

    def _run(
        self,
        *,
        topics: int,
        publishers_per_topic: int,
        subscribers_per_topic: int,
        count: int,
        rate: float | None = None,
    ) -> dict[str, Any]:
        """Subscribers ready first, then the publishers; both as separate processes."""
        prefix = self._prefix()
        common = ("--port", self.port, "--prefix", prefix, "--topics", topics, "--size", PAYLOAD)
        lat_file, ack_file = HOME / "latency.bin", HOME / "acks.bin"
        sub = None
        expect = topics * publishers_per_topic * count * subscribers_per_topic
        if subscribers_per_topic:
            args = self._load("sub", *common, "--per-topic", subscribers_per_topic, "--expect", expect)
            sub = subprocess.Popen([*args, "--lat-file", lat_file], stdout=subprocess.PIPE, text=True)
            assert sub.stdout is not None
            if sub.stdout.readline().strip() != "ready":
                sub.kill()
                raise RuntimeError("mqtt_load sub did not get ready")
        pub_args = self._load("pub", *common, "--per-topic", publishers_per_topic, "--count", count)
        pub_args += ["--window", str(WINDOW), "--ack-file", str(ack_file)]
        if rate:
            pub_args += ["--rate", str(rate)]
        # The subscriber's CPU before this point (connecting) is not load; it is small anyway.
        children0, window = children_cpu_seconds(), Window(self.process.pid)
        try:
            pub = json.loads(subprocess.run(pub_args, check=True, capture_output=True, text=True).stdout)
            result: dict[str, Any] = {"publish": pub}
            if sub is not None:
                assert sub.stdout is not None
                result["deliver"] = json.loads(sub.stdout.read().strip().splitlines()[-1])
                sub.wait(60)
                if result["deliver"]["delivered"] != expect:
                    raise RuntimeError(f"Mosquitto delivered {result['deliver']} of {expect}")
        finally:
            if sub is not None and sub.poll() is None:
                sub.kill()
                sub.wait()
        result["cpu"] = window.close(children_cpu_seconds() - children0)
        result["ack_latency"] = read_us_samples(ack_file)
        if sub is not None:
            result["latency"] = read_us_samples(lat_file)
        return result

    def throughput(self) -> dict[str, Any]:
        """50 publishers, 32 unacknowledged each, nobody subscribed: PUBACKs/s."""
        r = self._run(
            topics=SENDERS // GROUP,
            publishers_per_topic=GROUP,
            subscribers_per_topic=0,
            count=THROUGHPUT_COUNT,
        )
        return {"per_s": r["publish"]["acked_per_s"], "cpu": r["cpu"], "ack_latency": r["ack_latency"]}

    def fanout(self, members: int) -> dict[str, Any]:
        """50 publishers over ``50 / members`` topics, ``members`` subscribers each: deliveries/s."""
        groups = SENDERS // members
        r = self._run(
            topics=groups,
            publishers_per_topic=SENDERS // groups,
            subscribers_per_topic=members,
            count=FANOUT_MESSAGES[members] // SENDERS,
        )
        return {
            "per_s": r["deliver"]["delivered_per_s"],
            "deliveries": r["deliver"]["delivered"],
            "cpu": r["cpu"],
            "latency": r["latency"],
        }

    def latency(self, rate: int) -> dict[str, Any]:
        """50 publishers paced at ``rate`` messages/s in all, one subscriber per topic."""
        r = self._run(
            topics=SENDERS // GROUP,
            publishers_per_topic=GROUP,
            subscribers_per_topic=1,
            count=max(1, int(rate * LATENCY_SECONDS) // SENDERS),
            rate=rate,
        )
        return {
            "offered_per_s": rate,
            "achieved_per_s": round(r["publish"]["acked_per_s"], 1),
            "cpu": r["cpu"],
            "latency": r["latency"],
            "ack_latency": r["ack_latency"],
        }

    def idle(self, connections: int) -> dict[str, Any]:
        """Broker memory per idle connected client (no subscriptions, no traffic)."""
        time.sleep(0.5)
        before = self.process.rss_kib()
        holders = []
        try:
            for i in range(math.ceil(connections / IDLE_PER_PROCESS)):
                n = min(IDLE_PER_PROCESS, connections - i * IDLE_PER_PROCESS)
                p = subprocess.Popen(
                    self._load("idle", "--port", self.port, "--conns", n),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                holders.append(p)
                assert p.stdout is not None
                if p.stdout.readline().strip() != "ready":
                    raise RuntimeError("mqtt_load idle did not get ready")
            time.sleep(1.0)  # let the broker settle before reading its RSS
            after = self.process.rss_kib()
        finally:
            for p in holders:
                assert p.stdin is not None
                p.stdin.close()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        return {
            "connections": connections,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_connection": round((after - before) / connections, 2),
            "loadavg": loadavg(),
        }
