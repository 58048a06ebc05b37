#!/usr/bin/env python3
"""Edge security under load (issue 7): what a rate-limit check costs, whether legitimate
clients keep their latency while a flood from other addresses is being limited, and how
much memory a million distinct client keys take.

1. CPU per request (sluice pinned to CPU 1, one worker thread; wrk -t1 -c50 on CPU 0; a
   `respond` route so that the limiter is most of the work): no limit, a local limit, a
   Redis-backed limit with one hot key, and a Redis-backed limit where every request is
   a new key (the worst case: every request needs a lease); for reference, nginx
   (`worker_processes 1`) answering `return 200` without and with `limit_req` keyed by
   `$binary_remote_addr` (nginx has no Redis-backed limit). The limits never bind
   (10^6/s), so every request takes the full allowed path. CPU µs per request is the
   sluice process's utime+stime over the requests wrk completed; Redis's own CPU per
   request is reported beside it. Rounds are interleaved.
2. Flood: a per-client limit of 100/s (burst 50) keyed by the real client address
   (`real-ip` trusting 127.0.0.1, addresses in X-Forwarded-For), in front of an nginx
   origin. The legitimate client (wrk -c4, each connection pausing 50 ms between
   requests, so about 80 req/s: under its limit) runs alone, then next to a flood of
   wrk -c64 from 20 other addresses at full speed (each address far over its limit: at
   most 2,000 of the flood's requests per second are allowed).
   Reports the legitimate client's p50/p99 in both cases and what the flood got, with
   refusals sent at once and with `tarpit "1s"` (refusals held for a second).
3. Memory: sluice with `max-keys` 1,000,000, then 1,000,000 requests each from a new
   address; VmRSS before and after (and with the default max-keys of 100,000).

Needs nginx, wrk and redis-server (apt-get install -y nginx wrk redis-server) and a
release build (cargo build --release). Python 3 standard library; helpers from run.py.

    python3 bench/security.py --duration 15   # about 9 minutes (the figures in the closing note)
    python3 bench/security.py --quick    # smoke test
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as rb  # noqa: E402

log = rb.log
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, argv, cpu, logpath):
        self.logf = open(logpath, "wb")
        self.p = subprocess.Popen(["taskset", "-c", str(cpu)] + argv, stdout=self.logf,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.p.pid

    def ticks(self):
        return rb.session_ticks(self.pid)

    def rss_kb(self):
        return rb.session_mem_kb(self.pid)[0]

    def stop(self):
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.p.wait()
        self.logf.close()


def wait_port(port, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def sluice(workdir, name, kdl, binary):
    path = os.path.join(workdir, f"{name}.kdl")
    with open(path, "w") as f:
        f.write(kdl)
    return Proc([binary, "run", "-c", path], 1, os.path.join(workdir, f"{name}.log"))


def wrk(port, seconds, conns=50, script=None, headers=(), cpu=0, background=False):
    argv = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"]
    for h in headers:
        argv += ["-H", h]
    if script:
        argv += ["-s", script]
    argv.append(f"http://127.0.0.1:{port}/")
    if background:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return rb.parse_wrk(out) | {"raw": out}


def lua(workdir, name, text):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


NEW_KEY_LUA = """-- every request with a new x-k value
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/", {["x-k"] = tostring(n)})
end
"""

LEGIT_LUA = """-- a polite client: 50 ms between requests on each connection
request = function() return wrk.format("GET", "/", {["X-Forwarded-For"] = "198.51.100.1"}) end
delay = function() return 50 end
"""

FLOOD_LUA = """-- 20 addresses in turn, as fast as possible
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/", {["X-Forwarded-For"] = "203.0.113." .. (n % 20)})
end
"""

DISTINCT_LUA = """-- a new client address per request (10.x.y.z), up to 16M of them
local n = 0
request = function()
  n = n + 1
  local a, b, c = math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256
  return wrk.format("GET", "/", {["X-Forwarded-For"] = "10." .. a .. "." .. b .. "." .. c})
end
"""


def nginx_respond(workdir, name, port, limited):
    """nginx answering `return 200 "ok"` itself, with or without `limit_req` (the same
    never-binding limit, keyed by the client address), for reference."""
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    zone = "limit_req_zone $binary_remote_addr zone=z:16m rate=1000000r/s;" if limited else ""
    limit = "limit_req zone=z burst=1000000 nodelay;" if limited else ""
    conf = f"""{rb.nginx_common(d, resource_nofile())}events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
{rb.nginx_temp_paths(d)}    {zone}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ {limit} default_type text/plain; return 200 "ok"; }}
    }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return Proc(["nginx", "-p", d, "-e", f"{d}/error.log", "-c", path], 1, os.path.join(d, "out.log"))


def cpu_section(a, workdir, binary, redis_port):
    limit = 'rate-limit { rate "1000000/s"; burst 1000000; %s }'
    variants = [
        ("no limit", ""),
        ("local limit", limit % ""),
        ("redis, one hot key", limit % 'store "redis"; name "hot"'),
        ("redis, a new key per request", limit % 'store "redis"; name "new"; key "header:x-k"'),
    ]
    procs, ports = {}, {}
    for i, (label, rl) in enumerate(variants):
        port, admin = free_port(), free_port()
        kdl = f"""
server {{ access-log "off"; worker-threads 1; admin "127.0.0.1:{admin}"
  redis "127.0.0.1:{redis_port}" timeout="100ms" }}
listener "127.0.0.1:{port}"
site "*" {{ route "/" {{ respond 200 "ok"; {rl} }} }}
"""
        procs[label] = sluice(workdir, f"cpu{i}", kdl, binary)
        ports[label] = port
    for label, limited in (("nginx return 200", False), ("nginx return 200 + limit_req", True)):
        port = free_port()
        procs[label] = nginx_respond(workdir, f"nginx{int(limited)}", port, limited)
        ports[label] = port
        variants.append((label, None))
    for p in ports.values():
        wait_port(p)
    new_key = lua(workdir, "newkey.lua", NEW_KEY_LUA)
    results = {label: [] for label, _ in variants}
    redis_pid = int(open(os.path.join(workdir, "redis.pid")).read())
    for _ in range(a.rounds):
        for label, _ in variants:
            script = new_key if "new key" in label else None
            t0, r0 = procs[label].ticks(), rb.proc_stat(redis_pid)[1]
            w = wrk(ports[label], a.duration, script=script)
            t1, r1 = procs[label].ticks(), rb.proc_stat(redis_pid)[1]
            n = max(w["requests"], 1)
            results[label].append({
                "cpu_us": (t1 - t0) / TICK * 1e6 / n,
                "redis_cpu_us": (r1 - r0) / TICK * 1e6 / n,
                "rps": w["rps"], "p99_ms": w["p99_ms"], "errors": w["errors"],
            })
    for p in procs.values():
        p.stop()
    rows = []
    for label, _ in variants:
        rs = results[label]
        med = lambda k: statistics.median(r[k] for r in rs if r[k] is not None)
        rows.append((label, med("cpu_us"), med("redis_cpu_us"), med("rps"), med("p99_ms")))
    base = {"sluice": rows[0][1], "nginx": next(r[1] for r in rows if r[0] == "nginx return 200")}
    print("\n### CPU per request (proxy on CPU 1, wrk -t1 -c50 on CPU 0; medians of %d x %ds)\n" % (a.rounds, a.duration))
    print("| variant | proxy CPU µs/req | + vs its no-limit | redis CPU µs/req | req/s | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, cpu, rcpu, rps, p99 in rows:
        b = base["nginx" if label.startswith("nginx") else "sluice"]
        print(f"| {label} | {cpu:.2f} | {cpu - b:+.2f} | {rcpu:.2f} | {rps:,.0f} | {p99:.2f} |")
    return results


def flood_section(a, workdir, binary):
    origin_port, status_port = free_port(), free_port()
    nofile = resource_nofile()
    argv = rb.write_origin(workdir, origin_port, status_port, nofile)
    origin = Proc(argv, 0, os.path.join(workdir, "origin.log"))
    wait_port(origin_port)
    legit, flood = lua(workdir, "legit.lua", LEGIT_LUA), lua(workdir, "flood.lua", FLOOD_LUA)
    results = {}
    for label, extra in (("429 at once", ""), ('tarpit "1s"', 'tarpit "1s"; ')):
        port = free_port()
        kdl = f"""
server {{ access-log "off"; worker-threads 1 }}
listener "127.0.0.1:{port}" {{ real-ip {{ trusted "127.0.0.1"; }} }}
upstream "origin" {{ server "127.0.0.1:{origin_port}" }}
site "*" {{
  rate-limit {{ rate "100/s"; burst 50; {extra}}}
  route "/" {{ proxy "origin" }}
}}
"""
        proxy = sluice(workdir, f"flood{len(results)}", kdl, binary)
        wait_port(port)
        out = {"baseline": [], "flood": [], "flood_side": []}
        for _ in range(a.rounds):
            out["baseline"].append(wrk(port, a.duration, conns=4, script=legit))
            f = wrk(port, a.duration + 2, conns=64, script=flood, background=True)
            time.sleep(1)
            out["flood"].append(wrk(port, a.duration, conns=4, script=legit))
            text = f.communicate()[0]
            out["flood_side"].append(rb.parse_wrk(text))
            time.sleep(2)  # held refusals of the flood's last requests end before the next baseline
        proxy.stop()
        results[label] = out
    origin.stop()
    med = lambda runs, k: statistics.median(r[k] for r in runs)
    print("\n### Legitimate client during a flood from 20 other addresses (limit 100/s, burst 50, per address)\n")
    print("legitimate: wrk -c4 with 50 ms think time (about 80 req/s, under its limit); flood: wrk -c64 "
          "cycling through 20 addresses at full speed; sluice on one core, medians of %d rounds\n" % a.rounds)
    print("| refusals | legit req/s alone | p50 / p99 ms alone | legit req/s in flood | p50 / p99 ms in flood | legit errors | p99 ratio | flood req/s | flood refused |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, out in results.items():
        b50, b99 = med(out["baseline"], "p50_ms"), med(out["baseline"], "p99_ms")
        f50, f99 = med(out["flood"], "p50_ms"), med(out["flood"], "p99_ms")
        errors = sum(r["errors"] for r in out["baseline"] + out["flood"])
        fs = out["flood_side"]
        refused = statistics.median(r["non2xx"] / max(r["requests"], 1) for r in fs)
        print(f"| {label} | {med(out['baseline'], 'rps'):,.0f} | {b50:.2f} / {b99:.2f} | {med(out['flood'], 'rps'):,.0f} | "
              f"{f50:.2f} / {f99:.2f} | {errors} | {f99 / b99:.2f}x | {med(fs, 'rps'):,.0f} | {refused:.1%} |")
    return results


def resource_nofile():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    except (ValueError, OSError):
        return soft


def memory_section(a, workdir, binary):
    distinct = lua(workdir, "distinct.lua", DISTINCT_LUA)
    rows = []
    for max_keys in (1_000_000, 100_000):
        port = free_port()
        kdl = f"""
server {{ access-log "off"; worker-threads 1 }}
listener "127.0.0.1:{port}" {{ real-ip {{ trusted "127.0.0.1"; }} }}
site "*" {{ route "/" {{ respond 200 "ok"; rate-limit {{ rate "10/s"; burst 10; max-keys {max_keys}; }} }} }}
"""
        p = sluice(workdir, f"mem{max_keys}", kdl, binary)
        wait_port(port)
        wrk(port, 1, conns=4)
        before = p.rss_kb()
        sent = 0
        while sent < a.keys:
            # Each wrk run starts its counter where the previous one stopped.
            with open(distinct, "w") as f:
                f.write(DISTINCT_LUA.replace("local n = 0", f"local n = {sent}"))
            sent += wrk(port, 5, conns=50, script=distinct)["requests"]
        after = p.rss_kb()
        p.stop()
        rows.append((max_keys, sent, before, after))
    print("\n### Memory after distinct client keys (local limit, one key per address)\n")
    print("| max-keys | requests from new addresses | RSS before KiB | RSS after KiB | growth MiB | bytes per key kept |")
    print("|---:|---:|---:|---:|---:|---:|")
    for max_keys, sent, before, after in rows:
        kept = min(max_keys, sent)
        print(f"| {max_keys:,} | {sent:,} | {before:,} | {after:,} | {(after - before) / 1024:.1f} | {(after - before) * 1024 / kept:.0f} |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/sluice"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["cpu", "flood", "memory"])
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.duration, a.keys = 1, 3, 100_000
    for tool in ("wrk", "nginx", "redis-server", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install -y nginx wrk redis-server")
    workdir = tempfile.mkdtemp(prefix="sluice-security.")
    binary = os.path.join(workdir, "sluice")
    shutil.copy(a.binary, binary)
    log(f"workdir {workdir}")
    redis_port = free_port()
    redis = Proc(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--pidfile", os.path.join(workdir, "redis.pid")], 0,
                 os.path.join(workdir, "redis.log"))
    wait_port(redis_port)
    with open(os.path.join(workdir, "redis.pid"), "w") as f:
        f.write(str(redis.pid))
    results = {}
    try:
        if a.only in (None, "cpu"):
            results["cpu"] = cpu_section(a, workdir, binary, redis_port)
        if a.only in (None, "flood"):
            results["flood"] = flood_section(a, workdir, binary)
        if a.only in (None, "memory"):
            results["memory"] = memory_section(a, workdir, binary)
    finally:
        redis.stop()
    os.makedirs(os.path.join(ROOT, "bench/out"), exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(ROOT, f"bench/out/security-{stamp}.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
