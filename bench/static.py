#!/usr/bin/env python3
"""Static file serving: sluice's `files` route action against nginx `root`, on one machine,
with the same files and the same wrk load.

Files (generated in a temporary directory): 1k.bin (1 KiB), 64k.bin (64 KiB), both random
bytes, and index.html (~4 KiB). Servers, each pinned to --proxy-cpu (default 1):

  - sluice: `sluice run -c FILE`, `worker-threads 1`, `access-log "off"`, one route
    `route "/" { files "DIR" }` (defaults: index "index.html", no listing, no precompressed);
  - nginx: 1 worker, `sendfile on; tcp_nopush on; open_file_cache off; access_log off;
    keepalive_requests 100000`, `location / { root DIR; }`, a `types` block giving .html and
    .bin the same Content-Type sluice sends; nginx's defaults otherwise;
  - nginx with `open_file_cache max=1000` (the same otherwise; --no-nginx-cache drops it).

Every file (and `/`, the index) is first fetched through every server and compared byte for
byte with the file on disk (status 200 required). Then per file size: a warm-up per
server, and --rounds (3) rounds of `wrk -t1 -c50 -d10s --latency` keep-alive per server,
pinned to --client-cpu (default 0), the server order rotated between rounds. Reported
(medians): req/s, MiB/s (wrk's Transfer/sec: bodies and headers), server CPU µs per
request (utime + stime from /proc of every process in the server's session: nginx master
+ worker), p50 / p99 latency, errors (wrk socket errors + non-2xx/3xx), busy % of the server
and client cores and the CPU other processes used meanwhile.

Python 3 standard library only; helpers from bench/run.py. See bench/README.md.

    python3 bench/static.py               # 1k and 64k, 3 servers x 3 rounds x 10 s, ~4 min
    python3 bench/static.py --quick       # smoke test: 3 s runs, 1 round
    python3 bench/static.py --sizes 1k 64k 1m --no-nginx-cache
"""

import argparse
import hashlib
import http.client
import json
import os
import re
import resource
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

BenchError = rb.BenchError
log = rb.log
fmt = rb.fmt

INDEX_NAME = "index.html"
WRK_UNITS = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


# ------------------------------------------------------------------ small helpers

def parse_size(text):
    """'1k' / '64K' / '1m' / '4096' -> bytes (binary units)."""
    m = re.fullmatch(r"(\d+)([kKmM]?)", text.strip())
    if not m or int(m.group(1)) == 0:
        raise ValueError(text)
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2}[m.group(2).lower()]


def size_label(n):
    if n % (1024 ** 2) == 0:
        return f"{n // 1024 ** 2}m"
    if n % 1024 == 0:
        return f"{n // 1024}k"
    return str(n)


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def git(*args):
    try:
        return subprocess.run(["git", "-C", rb.REPO, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL).stdout.decode().strip()
    except OSError:
        return None


def http_get(port, path, timeout=5.0):
    """(status, {lower-case header: value}, body) of one GET on a new connection."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        c.close()


def raw_response_head(port, path, timeout=5.0):
    """The status line and headers, as sent, of a GET like wrk's (HTTP/1.1, Host only)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = s.recv(65536)
            if not data:
                break
            buf += data
    finally:
        s.close()
    end = buf.find(b"\r\n\r\n")
    return buf[:end + 4] if end >= 0 else buf


def parse_wrk(text):
    if not re.search(r"\d+ requests in", text):
        raise BenchError(f"could not parse wrk's output:\n{text}")
    r = rb.parse_wrk(text)
    m = re.search(r"Transfer/sec:\s+([\d.]+)([KMGT]?B)", text)
    # wrk's units are binary (1 KB = 1024 B)
    r["mib_s"] = float(m.group(1)) * WRK_UNITS[m.group(2)] / 1024 ** 2 if m else None
    return r


def error_text(r):
    parts = [f"{k} {v}" for k, v in r.get("socket_errors", {}).items() if v]
    if r.get("non2xx"):
        parts.append(f"non-2xx {r['non2xx']}")
    return str(r["errors"]) + (f" ({', '.join(parts)})" if parts else "")


# ------------------------------------------------------------------ files and configs

def write_files(root, sizes):
    """Random files of the given sizes plus index.html; {url path: bytes}."""
    os.makedirs(root, exist_ok=True)
    files = {}
    for n in sizes:
        data = os.urandom(n)
        name = f"{size_label(n)}.bin"
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
        files[f"/{name}"] = data
    para = ("<p>Sluice static file benchmark. Lorem ipsum dolor sit amet, consectetur "
            "adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna "
            "aliqua.</p>\n")
    html = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<title>sluice bench</title>\n</head>\n<body>\n<h1>Static files</h1>\n"
            + para * 27 + "</body>\n</html>\n").encode()
    with open(os.path.join(root, INDEX_NAME), "wb") as f:
        f.write(html)
    files[f"/{INDEX_NAME}"] = html
    files["/"] = html  # the index of the root directory
    return files


def nginx_conf(d, port, root, nofile, cache):
    conf = f"""# generated by bench/static.py: nginx serving {root}
{rb.nginx_common(d, nofile)}events {{ }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    open_file_cache {"max=1000" if cache else "off"};
    keepalive_requests 100000;
    # the Content-Type sluice sends for these (nginx would say text/plain for .bin)
    types {{
        text/html html;
        application/octet-stream bin;
    }}
{rb.nginx_temp_paths(d)}    server {{
        listen 127.0.0.1:{port};
        location / {{
            root {root};
        }}
    }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return ["nginx", "-p", d, "-e", f"{d}/error.log", "-c", path]


def sluice_conf(d, port, root, worker_threads):
    conf = f"""// generated by bench/static.py: sluice serving {root}
server {{
    worker-threads {worker_threads}
    access-log "off"
    shutdown-grace "1s"
}}
listener "127.0.0.1:{port}"
site "*" {{
    route "/" {{
        files "{root}"
    }}
}}
"""
    path = os.path.join(d, "sluice.kdl")
    with open(path, "w") as f:
        f.write(conf)
    return path


# ------------------------------------------------------------------ the benchmark

class Static:
    def __init__(self, a):
        self.a = a
        self.procs = []
        self.workdir = None
        self.targets = []
        self.ports = rb.Ports(a.port_base)
        self.results = {"meta": {}, "verify": [], "runs": []}

    def pin(self, cpu, argv):
        return argv if self.a.no_pin else ["taskset", "-c", cpu] + argv

    def sluice_env(self):
        return dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1")

    # -- setup
    def setup(self):
        a = self.a
        self.workdir = tempfile.mkdtemp(prefix="sluice-static-")
        if rb.NGINX_USER:
            os.chmod(self.workdir, 0o755)
        log(f"workdir (files, configs, logs): {self.workdir}"
            + (" (kept)" if a.keep else " (removed at the end; --keep to keep it)"))
        # run a copy: a rebuild of target/release/sluice meanwhile cannot change the binary
        bindir = os.path.join(self.workdir, "bin")
        os.makedirs(bindir)
        with open(a.sluice_bin, "rb") as f:
            data = f.read()
        a.binary = os.path.join(bindir, "sluice")
        with open(a.binary, "wb") as f:
            f.write(data)
        os.chmod(a.binary, 0o755)
        st = os.stat(a.sluice_bin)
        self.results["meta"] = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv,
            "git_commit": git("rev-parse", "--short", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "binary": a.sluice_bin,
            "binary_mtime": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(st.st_mtime)),
            "binary_sha256": hashlib.sha256(data).hexdigest(),
            "versions": {"sluice": rb.tool_version([a.binary, "--version"]),
                         "wrk": rb.tool_version(["wrk", "-v"]),
                         "nginx": rb.tool_version(["nginx", "-v"])},
            "kernel": os.uname().release, "cpus": os.cpu_count(),
            "settings": {k: v for k, v in vars(a).items() if k != "binary"},
        }
        m = self.results["meta"]
        log(f"sluice: {a.sluice_bin} ({m['binary_mtime']}, sha256 {m['binary_sha256'][:12]}, "
            f"{m['versions']['sluice']}) -> {a.binary}")

        self.root = os.path.join(self.workdir, "www")
        self.files = write_files(self.root, a.sizes)
        log(f"files in {self.root}: "
            + ", ".join(f"{p.lstrip('/')} ({len(b)} B)" for p, b in self.files.items()
                        if p != "/"))

        # sluice first: `sluice check` tells at once whether this build has `files`
        t = {"label": "sluice", "name": "sluice", "kind": "sluice", "port": self.ports.take()}
        d = os.path.join(self.workdir, "sluice")
        os.makedirs(d)
        kdl = sluice_conf(d, t["port"], self.root, a.worker_threads)
        r = subprocess.run([a.binary, "check", "-c", kdl], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60, env=self.sluice_env())
        if r.returncode != 0:
            out = r.stdout.decode(errors="replace")
            hint = ""
            if "unknown node `files`" in out:
                hint = (f"\nThis sluice binary has no `files` route action: it was built "
                        f"({m['binary_mtime']}) from sources before commit 7e1278d. Rebuild "
                        f"it (`cargo build --release -p sluice`) or pass --sluice-bin.")
            raise BenchError(f"`sluice check -c {kdl}` failed:\n{out}{hint}")
        t["argv"] = self.pin(a.proxy_cpu, [a.binary, "run", "-c", kdl])
        t["env"] = self.sluice_env()
        self.targets.append(t)

        variants = [("nginx", "nginx", False)]
        if not a.no_nginx_cache:
            variants.append(("nginx (open_file_cache)", "nginx-ofc", True))
        for label, name, cache in variants:
            t = {"label": label, "name": name, "kind": "nginx", "cache": cache,
                 "port": self.ports.take()}
            d = os.path.join(self.workdir, name)
            os.makedirs(d)
            argv = nginx_conf(d, t["port"], self.root, a.nofile, cache)
            r = subprocess.run(argv + ["-t"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=60)
            if r.returncode != 0:
                raise BenchError(f"`{' '.join(argv)} -t` failed:\n"
                                 + r.stdout.decode(errors="replace"))
            t["argv"] = self.pin(a.proxy_cpu, argv)
            t["env"] = None
            self.targets.append(t)

        for t in self.targets:
            p = rb.Proc(t["name"], t["argv"], os.path.join(self.workdir, f"{t['name']}.log"),
                        env=t["env"])
            self.procs.append(p)
            t["proc"] = p
            rb.wait_http_ready(p, t["port"], [(f"/{INDEX_NAME}", len(self.files["/"]))],
                               a.ready_timeout, t["label"])
            log(f"{t['label']}: pid {p.pid}, 127.0.0.1:{t['port']}"
                + ("" if a.no_pin else f", cpu {a.proxy_cpu}") + f": {' '.join(t['argv'])}")

    def verify(self):
        """Every file through every server: status 200 and the bytes on disk."""
        bad = []
        for t in self.targets:
            for path, want in self.files.items():
                try:
                    status, hdrs, body = http_get(t["port"], path)
                    head = raw_response_head(t["port"], path)
                except OSError as e:
                    bad.append(f"{t['label']} GET {path}: {type(e).__name__}: {e}")
                    continue
                ok = status == 200 and body == want
                self.results["verify"].append({
                    "target": t["label"], "path": path, "status": status, "bytes": len(body),
                    "want_bytes": len(want), "identical": body == want,
                    "content_type": hdrs.get("content-type"),
                    "header_bytes": len(head), "head": head.decode("latin-1")})
                if not ok:
                    bad.append(f"{t['label']} GET {path}: status {status}, {len(body)} bytes "
                               f"(want 200, {len(want)} bytes), "
                               f"{'identical' if body == want else 'content differs'}")
        if bad:
            raise BenchError("correctness check failed:\n  " + "\n  ".join(bad))
        log(f"verified: {len(self.files)} paths x {len(self.targets)} servers answer 200 "
            f"with the bytes on disk")

    # -- load
    def wrk(self, port, path, duration):
        a = self.a
        argv = self.pin(a.client_cpu, ["wrk", "-t", str(a.wrk_threads), "-c",
                                       str(a.connections), "-d", f"{duration}s", "--latency",
                                       f"http://127.0.0.1:{port}{path}"])
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=duration + 60)
        except subprocess.TimeoutExpired:
            raise BenchError(f"wrk did not finish within {duration + 60}s")
        text = r.stdout.decode(errors="replace")
        if r.returncode != 0:
            raise BenchError(f"{' '.join(argv)} exited with {r.returncode}:\n{text}")
        return argv, text

    def measure(self, t, size, rnd):
        a = self.a
        p = t["proc"]
        if not p.alive():
            raise BenchError(f"{t['label']} died (rc={p.p.returncode}); "
                             f"log {p.logpath}:\n{p.tail()}")
        path = f"/{size_label(size)}.bin"
        cpu0 = rb.cpu_stat()
        st0 = rb.session_ticks(p.pid)
        ct0 = rb.children_cpu_s()
        w0 = time.time()
        argv, text = self.wrk(t["port"], path, a.duration)
        wall = time.time() - w0
        ct1 = rb.children_cpu_s()
        st1 = rb.session_ticks(p.pid)
        cpu1 = rb.cpu_stat()
        r = parse_wrk(text)
        reqs = r["requests"]
        server_s = (st1 - st0) / rb.CLK_TCK
        client_s = ct1 - ct0

        def core_pct(spec):
            if a.no_pin:
                return None
            cpus = rb.parse_cpulist(spec)
            busy = sum(cpu1[c][1] - cpu0[c][1] for c in cpus if c in cpu1)
            tot = sum(cpu1[c][2] - cpu0[c][2] for c in cpus if c in cpu1)
            return 100.0 * busy / tot if tot else None

        all_s = (cpu1["all"][0] - cpu0["all"][0]) / rb.CLK_TCK
        row = {"size": size, "path": path, "target": t["label"], "round": rnd,
               "client_argv": argv, "wall_s": round(wall, 3), **r,
               "server_cpu_s": server_s,
               "cpu_us_per_req": server_s * 1e6 / reqs if reqs else None,
               "server_processes": len(rb.session_pids(p.pid)),
               "client_cpu_s": client_s,
               "server_core_busy_pct": core_pct(a.proxy_cpu),
               "client_core_busy_pct": core_pct(a.client_cpu),
               # user+nice+system of the machine minus server and wrk: other processes
               "other_cpu_pct": max(0.0, 100.0 * (all_s - server_s - client_s) / wall),
               "raw": text}
        self.results["runs"].append(row)
        log(f"{path} r{rnd} {t['label']:>23}: {r['rps']:8.0f} req/s  "
            f"{fmt(r['mib_s'], '.1f')} MiB/s  {fmt(row['cpu_us_per_req'], '.2f')} us/req  "
            f"p99 {fmt(r['p99_ms'], '.2f')} ms  errors {error_text(r)}  "
            f"server core {fmt(row['server_core_busy_pct'], '.0f')}%  "
            f"client core {fmt(row['client_core_busy_pct'], '.0f')}%  "
            f"other {row['other_cpu_pct']:.0f}%")

    def run(self):
        a = self.a
        self.setup()
        self.verify()
        n = len(self.targets)
        est = len(a.sizes) * n * (a.rounds * (a.duration + 0.5) + a.warmup + 0.2)
        log(f"{len(a.sizes)} size(s) x {n} servers x {a.rounds} round(s) x {a.duration}s: "
            f"about {est / 60:.1f} min")
        for size in a.sizes:
            path = f"/{size_label(size)}.bin"
            if a.warmup:
                for t in self.targets:
                    self.wrk(t["port"], path, a.warmup)
            for rnd in range(a.rounds):
                k = rnd % n
                for t in self.targets[k:] + self.targets[:k]:  # rotate the order
                    self.measure(t, size, rnd + 1)
        self.results["meta"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def cleanup(self):
        rb.stop_procs(self.procs)
        self.procs = []
        if self.workdir and os.path.isdir(self.workdir):
            if self.a.keep:
                log(f"kept {self.workdir}")
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)


# ------------------------------------------------------------------ reporting

def report(R, a, partial=False):
    m = R["meta"]
    L = [f"## Static files: sluice `files` vs nginx `root` ({m.get('started')}"
         + (", INCOMPLETE" if partial else "") + ")\n",
         f"sluice {m.get('binary')} ({m.get('versions', {}).get('sluice')}, built "
         f"{m.get('binary_mtime')}, sha256 {str(m.get('binary_sha256'))[:12]}); commit "
         f"{m.get('git_commit')}{' (dirty tree)' if m.get('git_dirty') else ''}; "
         f"{m.get('versions', {}).get('nginx')}; {m.get('versions', {}).get('wrk')}.\n",
         f"`wrk -t{a.wrk_threads} -c{a.connections} -d{a.duration}s --latency` keep-alive, "
         f"{a.rounds} round(s) after a {a.warmup}s warm-up per server, server order rotated "
         f"between rounds; medians"
         + ("" if a.no_pin else f"; servers on CPU {a.proxy_cpu}, wrk on CPU {a.client_cpu}")
         + ". sluice: `worker-threads " + str(a.worker_threads) + "`, `access-log \"off\"`, "
         "`route \"/\" { files \"DIR\" }` (defaults). nginx: `worker_processes 1`, "
         "`sendfile on`, `tcp_nopush on`, `open_file_cache off` (the `open_file_cache` row: "
         "`max=1000`), `access_log off`, `keepalive_requests 100000`, `location / { root DIR; "
         "}`, a `types` block for .html/.bin; **nginx's defaults otherwise**. CPU µs/req = "
         "utime + stime of the server's processes (nginx: master + worker) from /proc / "
         "requests. MiB/s = wrk's Transfer/sec (bodies + headers). errors = wrk socket errors "
         "+ non-2xx/3xx. other % = CPU used by other processes meanwhile (a core = 100 %; "
         "above ~10 % the numbers are disturbed).\n"]
    ver = R.get("verify") or []
    if ver:
        paths = list(dict.fromkeys(v["path"] for v in ver))
        labels = list(dict.fromkeys(v["target"] for v in ver))
        ok = all(v["status"] == 200 and v["identical"] for v in ver)
        heads = "; ".join(
            f"{label} {next((v['header_bytes'] for v in ver if v['target'] == label and v['path'] == paths[0]), '-')} B"
            for label in labels)
        L.append(f"Correctness: GET {', '.join(paths)} through each server: "
                 + ("all 200 with the bytes on disk" if ok else "**FAILED**")
                 + f". Response header size ({paths[0]}): {heads}.\n")
    runs = R["runs"]
    labels = list(dict.fromkeys(r["target"] for r in runs))
    for size in dict.fromkeys(r["size"] for r in runs):
        rs_size = [r for r in runs if r["size"] == size]
        med = {}
        for label in labels:
            rs = [r for r in rs_size if r["target"] == label]
            if not rs:
                continue
            mm = {k: median([r.get(k) for r in rs]) for k in
                  ("rps", "mib_s", "cpu_us_per_req", "p50_ms", "p99_ms",
                   "server_core_busy_pct", "client_core_busy_pct", "other_cpu_pct")}
            mm["rounds"] = [r["cpu_us_per_req"] for r in rs]
            mm["errors"] = sum(r["errors"] for r in rs)
            med[label] = mm
        base = med.get("nginx", {}).get("cpu_us_per_req")
        rows = []
        for label, mm in med.items():
            c = mm["cpu_us_per_req"]
            rel = ("" if label == "nginx" or c is None or not base
                   else f"{100 * (c - base) / base:+.0f} %")
            rows.append([label, fmt(mm["rps"], ".0f"), fmt(mm["mib_s"], ".1f"),
                         fmt(c, ".2f"), " / ".join(fmt(x, ".2f") for x in mm["rounds"]), rel,
                         fmt(mm["p50_ms"], ".2f"), fmt(mm["p99_ms"], ".2f"), str(mm["errors"]),
                         fmt(mm["server_core_busy_pct"], ".0f"),
                         fmt(mm["client_core_busy_pct"], ".0f"),
                         fmt(mm["other_cpu_pct"], ".0f")])
        L.append(f"### GET /{size_label(size)}.bin ({size} bytes)\n")
        L.append(rb.md_table(["server", "req/s", "MiB/s", "CPU µs/req", "per round",
                              "CPU vs nginx", "p50 ms", "p99 ms", "errors", "server core %",
                              "wrk core %", "other %"], rows, "lrrrlrrrrrrr") + "\n")
    if runs:
        L.append("When the wrk core is ~100 % busy the client is the limit: compare CPU µs/req, "
                 "not req/s.\n")
    return "\n".join(L)


def save(R, a, partial=False):
    os.makedirs(a.out_dir, exist_ok=True)
    stem = os.path.join(a.out_dir, f"static-{a.stamp}")
    text = report(R, a, partial)
    with open(stem + ".txt", "w") as f:
        f.write(text + "\n")
    with open(stem + ".json", "w") as f:
        json.dump(R, f, indent=1, default=str)
    return text, stem


# ------------------------------------------------------------------ main

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sluice-bin", default=rb.DEFAULT_SLUICE,
                    help="sluice binary (default target/release/sluice); a copy is run")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: --duration 3 --rounds 1 --warmup 1 unless given")
    ap.add_argument("--sizes", nargs="+", default=["1k", "64k"], metavar="SIZE",
                    help="file sizes to load, e.g. 1k 64k 1m (default 1k 64k)")
    ap.add_argument("--duration", type=int, help="seconds per measured run (default 10)")
    ap.add_argument("--rounds", type=int, help="rounds per size, order rotated (default 3)")
    ap.add_argument("--warmup", type=int, help="seconds of unmeasured load per server and "
                                               "size (default 2)")
    ap.add_argument("--no-nginx-cache", action="store_true",
                    help="do not run the second nginx (open_file_cache max=1000)")
    ap.add_argument("--connections", type=int, default=50, help="wrk -c (default 50)")
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (default 1)")
    ap.add_argument("--worker-threads", type=int, default=1,
                    help="sluice's worker-threads (default 1, like nginx's one worker)")
    ap.add_argument("--client-cpu", default="0", help="CPU list for wrk (default 0)")
    ap.add_argument("--proxy-cpu", default="1", help="CPU list for the servers (default 1)")
    ap.add_argument("--no-pin", action="store_true", help="do not use taskset")
    ap.add_argument("--port-base", type=int, default=19900,
                    help="first port to try for the servers (default 19900)")
    ap.add_argument("--ready-timeout", type=float, default=20.0)
    ap.add_argument("--out-dir", default=rb.OUT_DIR,
                    help="where static-<timestamp>.txt / .json go (default bench/out)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (files, configs, logs)")
    a = ap.parse_args()

    a.duration = a.duration if a.duration is not None else (3 if a.quick else 10)
    a.rounds = a.rounds if a.rounds is not None else (1 if a.quick else 3)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.quick else 2)
    if a.duration < 1 or a.rounds < 1 or a.warmup < 0:
        ap.error("--duration and --rounds must be >= 1, --warmup >= 0")
    sizes = []
    for item in a.sizes:
        for s in item.split(","):
            if not s.strip():
                continue
            try:
                sizes.append(parse_size(s))
            except ValueError:
                ap.error(f"--sizes: not a size: {s!r} (e.g. 1k, 64k, 1m, 4096)")
    a.sizes = list(dict.fromkeys(sizes))
    if not a.sizes:
        ap.error("--sizes needs at least one size")
    a.sluice_bin = os.path.abspath(a.sluice_bin)
    a.out_dir = os.path.abspath(a.out_dir)
    a.stamp = time.strftime("%Y%m%d-%H%M%S")
    return a


def prepare(a):
    need = ["wrk", "nginx"] + ([] if a.no_pin else ["taskset"])
    missing = [x for x in need if not shutil.which(x)]
    if missing:
        raise BenchError(f"not found in PATH: {', '.join(missing)} "
                         f"(Debian: apt-get install -y wrk nginx util-linux)")
    if not (os.path.isfile(a.sluice_bin) and os.access(a.sluice_bin, os.X_OK)):
        raise BenchError(f"sluice binary {a.sluice_bin} not found or not executable "
                         f"(build it with `cargo build --release`, or pass --sluice-bin)")
    if not a.no_pin:
        ncpu = os.cpu_count() or 1
        try:
            cpus = rb.parse_cpulist(a.client_cpu) + rb.parse_cpulist(a.proxy_cpu)
        except ValueError:
            raise BenchError("--client-cpu / --proxy-cpu take a CPU list such as 0 or 0-3")
        if max(cpus) >= ncpu:
            raise BenchError(f"CPU {max(cpus)} does not exist (this machine has {ncpu}); "
                             f"pass --client-cpu / --proxy-cpu, or --no-pin")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))
    except (ValueError, OSError):
        pass
    a.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if not a.no_pin:
        # this script reads /proc between runs: keep it off the servers' core
        try:
            os.sched_setaffinity(0, set(rb.parse_cpulist(a.client_cpu)))
        except OSError as e:
            log(f"warning: could not pin this script to CPU {a.client_cpu}: {e}")


def main():
    a = parse_args()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    bench = None
    rc = 0
    try:
        prepare(a)
        bench = Static(a)
        bench.run()
        text, stem = save(bench.results, a)
        print(text)
        log(f"written: {stem}.txt (and .json with the raw wrk output)")
    except (BenchError, KeyboardInterrupt, SystemExit) as e:
        if isinstance(e, BenchError):
            print(f"bench/static.py: error: {e}", file=sys.stderr)
            rc = 2
        elif isinstance(e, KeyboardInterrupt):
            print("bench/static.py: interrupted", file=sys.stderr)
            rc = 130
        else:
            rc = e.code if isinstance(e.code, int) else 1
        if bench is not None and bench.results["runs"]:
            _text, stem = save(bench.results, a, partial=True)
            log(f"partial results: {stem}.txt")
    finally:
        if bench is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop cleanup
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            bench.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())
