"""The comparison's Markdown summary, PNG charts and README block, from ``compare.json``.

Kept apart from the measuring so that a summary can be rebuilt, or its wording
fixed, without measuring again: ``python -m bench.report`` rewrites
``bench/results/summary.md``, the charts and README's block from the last
``bench/results/compare.json``.  Every ratio is caseline ÷ peer, both measured in
the same run on the same machine; the notes say what each system does and does
not do for its figure.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

RESULTS: Final = Path(__file__).with_name("results")
README_START: Final = "<!-- bench-summary:start (written by `make bench`; edits here are overwritten) -->"
README_END: Final = "<!-- bench-summary:end -->"
SYSTEMS: Final = ("caseline", "mosquitto", "synapse")
LABELS: Final = {"caseline": "caseline", "mosquitto": "Mosquitto", "synapse": "Synapse"}
COLOURS: Final = {"caseline": "#1f6f8b", "mosquitto": "#99a3a4", "synapse": "#e07a5f"}


def _get(data: dict[str, Any], *path: str) -> Any:
    """``data[p0][p1]...``, or None where any step is missing (a skipped peer, a failed run)."""
    node: Any = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _synapse_latency_key(out: dict[str, Any]) -> str | None:
    return next((k for k in out.get("synapse", {}) if k.startswith("latency_")), None)


# ------------------------------------------------------------------ targets


def targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, judged on this run's own figures (None: the peer did not run)."""
    found: list[dict[str, Any]] = []

    def judge(name: str, workload: str, value: float | None, goal: float, how: str) -> None:
        found.append(
            {
                "target": name,
                "workload": workload,
                "value": None if value is None else round(value, 2),
                "goal": goal,
                "how": how,
                "met": None if value is None else value >= goal,
            }
        )

    c_rate = _get(out, "caseline", "throughput", "per_s", "median")
    s_rate = _get(out, "synapse", "throughput", "per_s", "median")
    judge(
        "durable send rate ≥ 40× Synapse's",
        "throughput",
        c_rate / s_rate if c_rate and s_rate else None,
        40.0,
        "caseline acknowledged updates/s ÷ Synapse sends/s (16 concurrent PUTs)",
    )
    key = _synapse_latency_key(out)
    c_p50 = _get(out, "caseline", "latency_1000", "latency", "p50_ms")
    s_p50 = _get(out, "synapse", key, "latency", "p50_ms") if key else None
    judge(
        "p50 delivery latency ≥ 10× lower than Synapse's",
        "latency_1000",
        s_p50 / c_p50 if c_p50 and s_p50 else None,
        10.0,
        f"Synapse p50 send→/sync at {key.split('_')[1] if key else '?'}/s"
        " ÷ caseline p50 post→delivery at 1,000/s",
    )
    for members in (10, 50):
        c = _get(out, "caseline", f"fanout_{members}", "per_s", "median")
        m = _get(out, "mosquitto", f"fanout_{members}", "per_s", "median")
        judge(
            f"≥ 0.5× Mosquitto's QoS 1 delivery rate, {members}-member fan-out",
            f"fanout_{members}",
            c / m if c and m else None,
            0.5,
            "caseline deliveries/s (durable, signatures verified) ÷ Mosquitto QoS 1 deliveries/s (in memory)",
        )
    return found


# ------------------------------------------------------------------ the table


def _n(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def _rate(node: dict[str, Any] | None) -> str:
    """``median (min–max)`` of repeated runs."""
    if not node:
        return "–"
    if node["min"] == node["max"]:
        return _n(node["median"])
    return f"{_n(node['median'])} ({_n(node['min'])}–{_n(node['max'])})"


def _lat(node: dict[str, Any] | None) -> str:
    if not node or not node.get("samples"):
        return "–"
    d = 2 if node["p99_ms"] < 10 else 1 if node["p99_ms"] < 100 else 0
    return f"{_n(node['p50_ms'], d)} / {_n(node['p95_ms'], d)} / {_n(node['p99_ms'], d)}"


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "–"
    r = a / b
    return f"{r:,.2f}×" if r < 10 else f"{r:,.0f}×"


def _peer(out: dict[str, Any], name: str) -> str | None:
    """Why a peer has no figures (skipped or failed), or None if it ran."""
    part = out.get(name, {})
    if "skipped" in part:
        return f"skipped: {part['skipped']}"
    if "failed" in part:
        return f"failed: {part['failed']}"
    return None


def table(out: dict[str, Any]) -> list[str]:
    """Rows per workload; columns caseline, Mosquitto, Synapse and the ratios caseline ÷ peer."""
    c, m, s = (out.get(k, {}) for k in SYSTEMS)
    rows: list[list[str]] = []

    def add(*cells: str) -> None:
        """workload, caseline, Mosquitto, ratio, Synapse, ratio."""
        rows.append(list(cells))

    def med(d: dict[str, Any], *path: str) -> float | None:
        value: float | None = _get(d, *path, "median")
        return value

    add(
        "(a) durable posts with receipts, 50 senders × 32 in flight (caseline: over its WebSocket stream):"
        " acknowledged updates/s",
        _rate(_get(c, "throughput", "per_s")),
        _rate(_get(m, "throughput", "per_s")),
        _ratio(med(c, "throughput", "per_s"), med(m, "throughput", "per_s")),
        _rate(_get(s, "throughput", "per_s")) + (" (16 concurrent PUTs)" if _get(s, "throughput") else ""),
        _ratio(med(c, "throughput", "per_s"), med(s, "throughput", "per_s")),
    )
    if _get(c, "throughput_http"):
        add(
            "(a) the same over HTTP POST, one request in flight per sender, as `Client.post` posts",
            _rate(_get(c, "throughput_http", "per_s")),
            "–",
            "–",
            "–",
            _ratio(med(c, "throughput_http", "per_s"), med(s, "throughput", "per_s")),
        )
    for members, shape in ((10, "five 10-member cases"), (50, "one 50-member case")):
        k = f"fanout_{members}"
        add(
            f"(b) fan-out over live connections, {shape}, every member posting: deliveries/s",
            _rate(_get(c, k, "per_s")),
            _rate(_get(m, k, "per_s")),
            _ratio(med(c, k, "per_s"), med(m, k, "per_s")),
            _rate(_get(s, k, "per_s")),
            _ratio(med(c, k, "per_s"), med(s, k, "per_s")),
        )
    skey = _synapse_latency_key(out)
    for rate in (1000, 5000):
        k = f"latency_{rate}"
        cv = _lat(_get(c, k, "latency"))
        achieved = _get(c, k, "achieved_per_s")
        if achieved is not None and achieved < 0.95 * rate:
            cv += f" (saturated: {_n(achieved)}/s achieved)"
        sv, sr = "–", "–"
        if skey and rate == 1000:
            sv = f"at {skey.split('_')[1]}/s (its ceiling is ~{_n(med(s, 'throughput', 'per_s'))}/s): "
            sv += _lat(_get(s, skey, "latency"))
            sr = _ratio(_get(c, k, "latency", "p50_ms"), _get(s, skey, "latency", "p50_ms")) + " (p50)"
        elif skey:
            sv = "cannot offer this rate"
        add(
            f"(c) post-to-delivery latency at {rate:,} updates/s offered, one follower per group: "
            "p50 / p95 / p99 ms",
            cv,
            _lat(_get(m, k, "latency")),
            _ratio(_get(c, k, "latency", "p50_ms"), _get(m, k, "latency", "p50_ms")) + " (p50)",
            sv,
            sr,
        )
    idle = [_get(d, "idle", "kib_per_connection") for d in (c, m, s)]
    add(
        f"(d) server memory per idle connection, {_n(_get(c, 'idle', 'connections'))} of them: KiB",
        _n(idle[0], 1) + (" (authenticated WebSocket)" if idle[0] is not None else ""),
        _n(idle[1], 1) + (" (MQTT client)" if idle[1] is not None else ""),
        _ratio(idle[0], idle[1]),
        _n(idle[2], 1) + (" (pending /sync long-poll)" if idle[2] is not None else ""),
        _ratio(idle[0], idle[2]),
    )
    for column, name in ((2, "mosquitto"), (4, "synapse")):
        reason = _peer(out, name)
        if reason and rows[0][column] == "–":
            rows[0][column] = reason  # say it once; the rest of its column stays "–"
    head = "| workload | caseline | Mosquitto | caseline ÷ Mosquitto | Synapse | caseline ÷ Synapse |"
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def core_rows(core: dict[str, Any] | None) -> list[str]:
    """(e) client-side and core micro-benchmarks, caseline only (no peer does this work)."""
    if not core:
        return ["(e) no `bench/results/core.json`: run `python -m bench.core`."]
    wanted = [
        "seal+sign 1 KiB update (CaseView.seal)",
        "open+verify 1 KiB update",
        "verify a receipt",
        "commit for 50 devices, all new: create+verify",
        "verify a 1,000-entry case from genesis",
    ]
    lines = ["| client-side / core operation | median | min–max | target |", "|---|---:|---:|---|"]
    for name in wanted:
        r = core.get("results", {}).get(name)
        if not r:
            continue
        unit, scale = ("ms", 1000.0) if r["median_us"] >= 10_000 else ("µs", 1.0)
        target = "" if r["target_us"] is None else f"≤ {_n(r['target_us'] / scale)} {unit}: {r['verdict']}"
        lines.append(
            f"| {name} | {_n(r['median_us'] / scale, 1)} {unit} | "
            f"{_n(r['min_us'] / scale, 1)}–{_n(r['max_us'] / scale, 1)} {unit} | {target} |"
        )
    return lines


def target_rows(found: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | this run | verdict |", "|---|---:|---|"]
    for t in found:
        verdict = "peer did not run" if t["met"] is None else "met" if t["met"] else "**missed**"
        value = "–" if t["value"] is None else f"{t['value']:,.2f}× (goal {t['goal']:g}×)"
        lines.append(f"| {t['target']} ({t['how']}) | {value} | {verdict} |")
    return lines


NOTES: Final = [
    "caseline is durable and verified for every figure: the broker checks each envelope's Ed25519 signature, "
    "chains it into its case's log, commits it to SQLite (WAL, `synchronous=FULL`, group commit) and only "
    "then answers with a signed receipt and delivers it. Its followers count deliveries without opening "
    "them; what a recipient pays to open and verify one is the `open+verify` row below.",
    "Mosquitto (QoS 1, persistence off) is neither durable nor encrypting: a PUBACK means the message is in "
    "the broker's memory. Its load comes from our C program `bench/mqtt_load.c` (libmosquitto); caseline's "
    "and Synapse's load generators are Python (aiohttp) processes, which costs them client CPU on the "
    "same two cores.",
    "Synapse (SQLite, WAL, `synchronous=FULL`) is durable; its `m.room.encrypted` events are opaque to it "
    "(no signature checked), sent by HTTP PUT and received by long-polling `/sync` (no WebSocket). Its rate "
    "limits were raised, presence turned off and logging set to WARNING; it cannot be offered 1,000 "
    "events/s, so its latency is measured at a rate it sustains, which flatters it.",
    "Every system ran alone on the machine's two cores together with its load generator, which other "
    "engineers' jobs were also using: each figure in `compare.json` carries the load average when it was "
    "taken. Saturating workloads are medians of repeated runs (min–max in brackets).",
]


def summary(out: dict[str, Any], core: dict[str, Any] | None) -> str:
    mach = out["machine"]
    lines = [
        "# caseline side by side with Mosquitto and Synapse",
        "",
        f"Measured {out['date'][:10]} by `{out['command']}` (`make bench`), "
        f"in {_n(out.get('wall_seconds'))} s, "
        f"on {mach['cpus']} cores ({mach['cpu']}), {mach['memory_gib']} GiB, Python {mach['python']}; "
        f"load average {out['loadavg_start'][0]} at the start and {out['loadavg_end'][0]} at the end "
        "(the machine is shared). "
        f"Mosquitto: {_get(out, 'mosquitto', 'version') or _peer(out, 'mosquitto')}; "
        f"Synapse: {_get(out, 'synapse', 'version') or _peer(out, 'synapse')}.",
        "",
        *table(out),
        "",
        *core_rows(core),
        "",
        "Targets (from the issue):",
        "",
        *target_rows(out.get("targets", [])),
        "",
        *[f"- {n}" for n in NOTES],
    ]
    prof = out.get("profiles")
    if prof:
        lines += [
            "",
            "Where the broker's time went in the workloads that missed (py-spy, event-loop thread):",
            "",
        ]
        for workload, p in prof.items():
            if not isinstance(p, dict) or "profile" not in p:
                lines.append(f"- {workload}: {p}")
                continue
            top = list(p["profile"]["total_pct_of_main"].items())
            project = [
                (f, v)
                for f, v in top
                if re.search(r"\((server|crypto|schemas)/", f) and "server/cli.py" not in f
            ][:10]
            listed = "; ".join(f"{f} {v}%" for f, v in project)
            achieved = ", ".join(f"{_n(v)} {k.removesuffix('_per_s')}/s" for k, v in p["achieved"].items())
            lines.append(
                f"- {workload} ({achieved}; broker {p['cpu']['server_cores']} cores, "
                f"load generator {p['cpu']['loadgen_cores']} cores); share of the event loop's samples "
                f"with each function on the stack: {listed}"
            )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ charts


def charts(out: dict[str, Any], folder: Path) -> list[Path]:
    """throughput.png (bars per system, log scale) and latency_cdf.png; none without matplotlib."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing (pip install -e '.[bench]'): no charts")
        return []
    written = []
    groups = [
        ("throughput", "(a) posts acknowledged/s\n50 senders"),
        ("fanout_10", "(b) deliveries/s\n10-member fan-out"),
        ("fanout_50", "(b) deliveries/s\n50-member fan-out"),
    ]
    fig, ax = plt.subplots(figsize=(8.5, 4.6), dpi=110)
    width = 0.27
    for i, system in enumerate(SYSTEMS):
        xs, ys = [], []
        for g, (key, _) in enumerate(groups):
            v = _get(out, system, key, "per_s", "median")
            if v:
                xs.append(g + (i - 1) * width)
                ys.append(v)
        bars = ax.bar(xs, ys, width, label=LABELS[system], color=COLOURS[system])
        ax.bar_label(bars, labels=[f"{y:,.0f}" for y in ys], fontsize=7, padding=2)
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)), [g[1] for g in groups], fontsize=8)
    ax.set_ylabel("per second (log scale)")
    ax.set_title(
        f"Throughput, 1 KiB updates, loopback, {out['machine']['cpus']} cores ({out['date'][:10]})",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", which="both", alpha=0.25)
    fig.tight_layout()
    path = folder / "throughput.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    skey = _synapse_latency_key(out)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110, sharey=True)
    for ax, rate in zip(axes, (1000, 5000), strict=True):
        series: list[tuple[str, str, Sequence[float] | None]] = [
            (s, f"{LABELS[s]} at {rate:,}/s", _get(out, s, f"latency_{rate}", "latency", "cdf_ms"))
            for s in ("caseline", "mosquitto")
        ]
        if skey and rate == 1000:
            label = f"Synapse at {skey.split('_')[1]}/s (a rate it sustains)"
            series.append(("synapse", label, _get(out, "synapse", skey, "latency", "cdf_ms")))
        for system, label, cdf in series:
            if cdf:
                ax.plot(
                    cdf, [i / (len(cdf) - 1) for i in range(len(cdf))], label=label, color=COLOURS[system]
                )
        ax.set_xscale("log")
        ax.set_xlabel("post → delivery (ms, log scale)")
        ax.set_title(f"{rate:,} updates/s offered, one follower per group", fontsize=9)
        ax.grid(which="both", alpha=0.25)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("fraction of deliveries")
    fig.suptitle("Latency CDFs", fontsize=10)
    fig.tight_layout()
    path = folder / "latency_cdf.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    return written


# ------------------------------------------------------------------ files


def readme_block(out: dict[str, Any]) -> str:
    mach = out["machine"]
    return "\n".join(
        [
            README_START,
            "",
            f"`make bench` on {out['date'][:10]}: {mach['cpus']} cores ({mach['cpu']}), "
            f"load average {out['loadavg_start'][0]}–{out['loadavg_end'][0]} (a shared machine); "
            "ratios are caseline ÷ peer, measured in the same run. Notes, targets and raw figures: "
            "[bench/results/summary.md](bench/results/summary.md), `bench/results/compare.json`.",
            "",
            *table(out),
            "",
            "![Throughput per system](bench/results/throughput.png)",
            "",
            README_END,
        ]
    )


def write(out: dict[str, Any], folder: Path, readme: Path | None) -> list[Path]:
    """summary.md, the charts and (if given) README's block; the paths written."""
    core_path = folder / "core.json"
    core = json.loads(core_path.read_text(encoding="utf-8")) if core_path.exists() else None
    path = folder / "summary.md"
    path.write_text(summary(out, core), encoding="utf-8")
    written = [path, *charts(out, folder)]
    if readme is not None and readme.exists():
        text = readme.read_text(encoding="utf-8")
        if README_START in text and README_END in text:
            head, rest = text.split(README_START, 1)
            _, tail = rest.split(README_END, 1)
            readme.write_text(head + readme_block(out) + tail, encoding="utf-8")
            written.append(readme)
        else:
            print(f"{readme} has no {README_START!r} block: left as it is")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    args = parser.parse_args()
    out = json.loads((args.results / "compare.json").read_text(encoding="utf-8"))
    out["targets"] = targets(out)
    for p in write(out, args.results, args.readme):
        print("wrote", p)


if __name__ == "__main__":
    main()
