#!/usr/bin/env python3
"""HTTP cache hits: sluice's cache against nginx `proxy_cache`, on one machine, with the
same origin, the same objects and the same wrk load.

Objects (random bytes, generated in a temporary directory): /1k.bin (1 KiB) and /64k.bin
(64 KiB), served by an nginx origin with `Cache-Control: max-age=3600` (and `stub_status`
on a second port, whose request counter shows whether the origin saw any request during a
run: it must not, every request should be a hit). Proxies, each pinned to --proxy-cpu
(default 1), origin and wrk on --client-cpu (default 0):

  - sluice: `sluice run -c FILE`, `worker-threads 1`, `access-log "off"`,
    `server { cache { memory "256MiB"; max-object "8MiB" } }`, a site with `cache` (the
    default rules) and `route "/" { proxy "origins" }`; checked with `sluice check` first;
  - nginx: 1 worker, `proxy_cache_path DIR levels=1:2 keys_zone=c:64m max_size=1g
    inactive=60m use_temp_path=off`, `proxy_cache c; proxy_cache_valid 200 60m;
    proxy_cache_lock on;`, `proxy_http_version 1.1`, `proxy_set_header Connection ""`,
    upstream keepalive, `access_log off`, `add_header X-Cache-Status
    $upstream_cache_status`, nginx's defaults otherwise (`sendfile` off). nginx keeps
    cached bodies in files: DIR is in the temporary directory (a disk file system: hits
    open the file and read it from the page cache);
  - nginx (sendfile): the same with `sendfile on` (cheaper for 64 KiB, dearer for 1 KiB;
    --sendfile-variant nopush adds `tcp_nopush on`, none leaves it out);
  - nginx (tmpfs): the first one with DIR on /dev/shm (--no-tmpfs leaves it out).

Warm-up and correctness: per proxy and object, GET until the response says hit (sluice
`Cache-Status: sluice; hit`, nginx `X-Cache-Status: HIT`; the second GET should be the first
hit), every body compared byte for byte with the file. Then per object size: a wrk warm-up
per proxy, and --rounds (3) rounds of `wrk -t1 -c50 -d10s --latency` keep-alive per proxy,
the proxy order rotated between rounds. Reported (medians): req/s, MiB/s, proxy CPU µs per
request (utime + stime from /proc of every process in the proxy's session: nginx master,
worker and cache manager/loader), p50 / p99, errors, origin requests during the run, RSS.

Python 3 standard library only; helpers from bench/run.py. See bench/README.md.

    python3 bench/cache.py                # 1k and 64k, 4 proxies x 3 rounds x 10 s, ~5 min
    python3 bench/cache.py --quick        # smoke test: 3 s runs, 1 round
    python3 bench/cache.py --sizes 1k 64k 1m --no-tmpfs --sendfile-variant none
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

WRK_UNITS = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}
MAX_AGE = 3600


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


def origin_requests(status_port):
    """nginx stub_status's request counter (it counts the status request itself), or None."""
    try:
        st, _, body = http_get(status_port, "/status", timeout=3.0)
    except OSError:
        return None
    m = re.search(rb"server accepts handled requests\s+(\d+)\s+(\d+)\s+(\d+)", body)
    return int(m.group(3)) if st == 200 and m else None


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


def is_hit(kind, hdrs):
    """Did this response come from the proxy's cache?"""
    if kind == "sluice":
        # RFC 9211: `sluice; hit; ttl=42` (a miss says `fwd=miss`)
        v = hdrs.get("cache-status", "")
        return any(p.strip().lower() == "hit" for p in v.split(";"))
    return hdrs.get("x-cache-status", "").strip().upper() == "HIT"


def cache_header(kind, hdrs):
    return hdrs.get("cache-status" if kind == "sluice" else "x-cache-status")


# ------------------------------------------------------------------ files and configs

def write_objects(root, sizes):
    """Random files of the given sizes; {url path: bytes}."""
    os.makedirs(root, exist_ok=True)
    objs = {}
    for n in sizes:
        data = os.urandom(n)
        name = f"{size_label(n)}.bin"
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
        objs[f"/{name}"] = data
    return objs


def origin_conf(d, port, status_port, root, nofile):
    conf = f"""# generated by bench/cache.py: the origin, cacheable responses
{rb.nginx_common(d, nofile)}events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    open_file_cache max=16 inactive=600s;
    types {{ application/octet-stream bin; }}
{rb.nginx_temp_paths(d)}    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        location / {{
            add_header Cache-Control "max-age={MAX_AGE}";
        }}
    }}
    server {{
        listen 127.0.0.1:{status_port};
        location = /status {{ stub_status; }}
    }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return ["nginx", "-p", d, "-e", f"{d}/error.log", "-c", path]


SENDFILE = {"off": "", "on": "    sendfile on;\n",
            "nopush": "    sendfile on;\n    tcp_nopush on;\n"}
SENDFILE_TEXT = {"off": "`sendfile` off (nginx's default: read() into a buffer, then write)",
                 "on": "`sendfile on`", "nopush": "`sendfile on; tcp_nopush on`"}


def nginx_conf(d, port, origin_port, cache_dir, nofile, a, sendfile_mode):
    ofc = ("    open_file_cache max=1000 inactive=600s;\n"
           if a.nginx_open_file_cache else "")
    sendfile = SENDFILE[sendfile_mode]
    conf = f"""# generated by bench/cache.py: nginx proxy_cache
{rb.nginx_common(d, nofile)}events {{ worker_connections 10240; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
{sendfile}{ofc}{rb.nginx_temp_paths(d)}    proxy_cache_path {cache_dir} levels=1:2 keys_zone=c:64m max_size=1g inactive=60m use_temp_path=off;
    upstream origin {{
        server 127.0.0.1:{origin_port};
        keepalive 64;
        keepalive_requests 1000000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache c;
            proxy_cache_valid 200 60m;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return ["nginx", "-p", d, "-e", f"{d}/error.log", "-c", path]


SITE_CACHE_FORMS = ["cache", 'cache { lock-timeout "5s" }']


def sluice_conf(d, port, origin_port, a, site_cache):
    conf = f"""// generated by bench/cache.py: sluice with its HTTP cache
server {{
    worker-threads {a.worker_threads}
    access-log "off"
    shutdown-grace "1s"
    cache {{
        memory "{a.memory}"
        max-object "{a.max_object}"
    }}
}}
listener "127.0.0.1:{port}"
upstream "origins" {{
    server "127.0.0.1:{origin_port}"
}}
site "*" {{
    {site_cache}
    route "/" {{
        proxy "origins"
    }}
}}
"""
    path = os.path.join(d, "sluice.kdl")
    with open(path, "w") as f:
        f.write(conf)
    return path


# ------------------------------------------------------------------ the benchmark

class CacheBench:
    def __init__(self, a):
        self.a = a
        self.procs = []
        self.workdir = None
        self.shm_dir = None
        self.origin = None
        self.targets = []
        self.ports = rb.Ports(a.port_base)
        self.results = {"meta": {}, "warm": [], "runs": []}

    def pin(self, cpu, argv):
        return argv if self.a.no_pin else ["taskset", "-c", cpu] + argv

    def sluice_env(self):
        return dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1")

    def start(self, name, argv, env=None):
        p = rb.Proc(name, argv, os.path.join(self.workdir, f"{name}.log"), env=env)
        self.procs.append(p)
        return p

    def origin_reqs(self):
        return origin_requests(self.status_port)

    # -- setup
    def setup(self):
        a = self.a
        self.workdir = tempfile.mkdtemp(prefix="sluice-cache-")
        if rb.NGINX_USER:
            os.chmod(self.workdir, 0o755)
        log(f"workdir (objects, configs, nginx cache, logs): {self.workdir}"
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

        # the origin
        root = os.path.join(self.workdir, "www")
        self.objects = write_objects(root, a.sizes)
        self.origin_port, self.status_port = self.ports.take(), self.ports.take()
        d = os.path.join(self.workdir, "origin")
        os.makedirs(d)
        argv = origin_conf(d, self.origin_port, self.status_port, root, a.nofile)
        self.origin = self.start("origin", self.pin(a.client_cpu, argv))
        rb.wait_http_ready(self.origin, self.origin_port,
                           [(p, len(b)) for p, b in self.objects.items()],
                           a.ready_timeout, "origin nginx")
        for path, want in self.objects.items():
            status, hdrs, body = http_get(self.origin_port, path)
            if status != 200 or body != want or f"max-age={MAX_AGE}" not in \
                    hdrs.get("cache-control", ""):
                raise BenchError(f"origin GET {path}: {status}, {len(body)} bytes, "
                                 f"Cache-Control {hdrs.get('cache-control')!r} (want 200, the "
                                 f"file's bytes, max-age={MAX_AGE})")
        if self.origin_reqs() is None:
            raise BenchError("origin stub_status does not answer")
        log(f"origin: nginx pid {self.origin.pid}, 127.0.0.1:{self.origin_port} "
            f"(stub_status :{self.status_port}/status), objects "
            + ", ".join(f"{p} ({len(b)} B)" for p, b in self.objects.items())
            + f", Cache-Control: max-age={MAX_AGE}")

        # sluice first: `sluice check` tells at once whether this build has the cache
        t = {"label": "sluice", "name": "sluice", "kind": "sluice", "port": self.ports.take()}
        d = os.path.join(self.workdir, "sluice")
        os.makedirs(d)
        outs = []
        for form in SITE_CACHE_FORMS:
            kdl = sluice_conf(d, t["port"], self.origin_port, a, form)
            r = subprocess.run([a.binary, "check", "-c", kdl], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=60, env=self.sluice_env())
            out = r.stdout.decode(errors="replace")
            if r.returncode == 0:
                break
            outs.append(f"--- with `{form}`:\n{out}")
            if "unknown node `cache`" in out:
                break  # no cache in this build at all: the other form cannot help
        if r.returncode != 0:
            hint = ""
            if "unknown node `cache`" in "".join(outs):
                hint = (f"\nThis sluice binary has no HTTP cache: it was built "
                        f"({m['binary_mtime']}) from sources before commit 433c567. Rebuild "
                        f"it (`cargo build --release -p sluice`) or pass --sluice-bin.")
            raise BenchError(f"`sluice check -c {kdl}` failed:\n" + "\n".join(outs) + hint)
        m["site_cache"] = form
        with open(kdl) as f:
            m["sluice_config"] = f.read()
        log(f"sluice config checked (site: `{form}`): {kdl}")
        t["argv"] = self.pin(a.proxy_cpu, [a.binary, "run", "-c", kdl])
        t["env"] = self.sluice_env()
        self.targets.append(t)

        # (label, name, cache directory, sendfile)
        variants = [("nginx", "nginx", os.path.join(self.workdir, "nginx", "cache"), "off")]
        if a.sendfile_variant != "none":
            variants.append(("nginx (sendfile)", "nginx-sendfile",
                             os.path.join(self.workdir, "nginx-sendfile", "cache"),
                             a.sendfile_variant))
        if not a.no_tmpfs:
            if os.path.isdir(a.tmpfs_dir) and os.access(a.tmpfs_dir, os.W_OK):
                self.shm_dir = tempfile.mkdtemp(prefix="sluice-cache-bench-", dir=a.tmpfs_dir)
                if rb.NGINX_USER:
                    os.chmod(self.shm_dir, 0o755)
                variants.append(("nginx (tmpfs)", "nginx-tmpfs",
                                 os.path.join(self.shm_dir, "cache"), "off"))
            else:
                log(f"warning: {a.tmpfs_dir} is not a writable directory: no nginx (tmpfs)")
        m["nginx_cache_dirs"] = {}
        for label, name, cache_dir, sendfile in variants:
            t = {"label": label, "name": name, "kind": "nginx", "port": self.ports.take(),
                 "cache_dir": cache_dir, "sendfile": sendfile}
            d = os.path.join(self.workdir, name)
            os.makedirs(d, exist_ok=True)
            os.makedirs(cache_dir, exist_ok=True)
            fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", cache_dir],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            # the first line: findmnt may list a mount point twice (stacked mounts)
            t["cache_fs"] = (fs.stdout.decode().strip().splitlines() or [None])[0]
            m["nginx_cache_dirs"][label] = {"dir": cache_dir, "fstype": t["cache_fs"],
                                            "sendfile": sendfile}
            argv = nginx_conf(d, t["port"], self.origin_port, cache_dir, a.nofile, a, sendfile)
            r = subprocess.run(argv + ["-t"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=60)
            if r.returncode != 0:
                raise BenchError(f"`{' '.join(argv)} -t` failed:\n"
                                 + r.stdout.decode(errors="replace"))
            t["argv"] = self.pin(a.proxy_cpu, argv)
            t["env"] = None
            self.targets.append(t)

        # readiness without touching the cache: a path the origin does not have (404 is
        # not cached: only 200 is in proxy_cache_valid, and the origin sends no max-age)
        for t in self.targets:
            p = self.start(t["name"], t["argv"], env=t["env"])
            t["proc"] = p
            self.wait_ready(t)
            log(f"{t['label']}: pid {p.pid}, 127.0.0.1:{t['port']}"
                + ("" if a.no_pin else f", cpu {a.proxy_cpu}")
                + (f", cache dir {t['cache_dir']} ({t['cache_fs']})" if "cache_dir" in t
                   else "") + f": {' '.join(t['argv'])}")

    def wait_ready(self, t):
        deadline = time.time() + self.a.ready_timeout
        last = "no answer"
        while time.time() < deadline:
            if not t["proc"].alive():
                raise BenchError(f"{t['label']} exited during start-up "
                                 f"(rc={t['proc'].p.returncode}); log {t['proc'].logpath}:\n"
                                 f"{t['proc'].tail()}")
            try:
                status, _, _ = http_get(t["port"], "/ready-probe-not-cached")
                if status == 404:
                    return
                last = f"status {status}"
            except OSError as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.1)
        raise BenchError(f"{t['label']} on 127.0.0.1:{t['port']} not ready after "
                         f"{self.a.ready_timeout:.0f}s ({last}); log {t['proc'].logpath}:\n"
                         f"{t['proc'].tail()}")

    def warm(self):
        """Fill every cache: GET each object until it is a hit (the 2nd GET should be),
        every body equal to the file."""
        bad = []
        for t in self.targets:
            for path, want in self.objects.items():
                o0 = self.origin_reqs()
                gets = []
                first_hit = None
                for i in range(1, self.a.warm_gets + 1):
                    try:
                        status, hdrs, body = http_get(t["port"], path)
                    except OSError as e:
                        bad.append(f"{t['label']} GET {path} #{i}: {type(e).__name__}: {e}")
                        break
                    hit = is_hit(t["kind"], hdrs)
                    gets.append({"status": status, "bytes": len(body),
                                 "identical": body == want, "hit": hit,
                                 "cache_header": cache_header(t["kind"], hdrs),
                                 "age": hdrs.get("age")})
                    if status != 200 or body != want:
                        bad.append(f"{t['label']} GET {path} #{i}: status {status}, "
                                   f"{len(body)} bytes (want 200, {len(want)} bytes), "
                                   f"{'identical' if body == want else 'content differs'}")
                        break
                    if hit and first_hit is None:
                        first_hit = i
                    if first_hit is not None and i >= max(3, first_hit + 1):
                        break
                    if i >= 2 and first_hit is None:
                        time.sleep(0.1)  # nginx renames its cache file when the fetch ends
                o1 = self.origin_reqs()
                origin_n = o1 - o0 - 1 if o0 is not None and o1 is not None else None
                self.results["warm"].append({"target": t["label"], "path": path,
                                             "gets": gets, "first_hit": first_hit,
                                             "origin_requests": origin_n})
                log(f"warm {t['label']} {path}: "
                    + ", ".join(f"#{i + 1} {g['status']} {g['bytes']} B "
                                f"{g['cache_header']!r}" for i, g in enumerate(gets))
                    + f"; first hit: GET #{first_hit}; origin requests {fmt(origin_n, 'd')}")
                if first_hit is None and not any(b.startswith(f"{t['label']} GET {path}")
                                                 for b in bad):
                    bad.append(f"{t['label']} GET {path}: no hit after {len(gets)} GETs "
                               f"(cache headers: {[g['cache_header'] for g in gets]})")
        if bad:
            raise BenchError("warm-up / correctness check failed:\n  " + "\n  ".join(bad))
        late = [w for w in self.results["warm"] if w["first_hit"] != 2]
        log(f"warm: {len(self.objects)} objects x {len(self.targets)} proxies cached, bodies "
            f"identical to the files"
            + ("" if not late else "; first hit later than the 2nd GET: "
               + ", ".join(f"{w['target']} {w['path']} #{w['first_hit']}" for w in late)))

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

    def wait_quiet(self):
        """Wait (at most --quiet-wait s) until other processes use less than --max-noise %
        of a core: ours are idle between runs, so any CPU use now is someone else's."""
        a = self.a
        if a.max_noise < 0 or a.quiet_wait <= 0:
            return
        deadline = time.time() + a.quiet_wait
        waited = False
        while True:
            c0 = rb.cpu_stat()["all"]
            time.sleep(0.5)
            c1 = rb.cpu_stat()["all"]
            busy = 100.0 * (c1[0] - c0[0]) / rb.CLK_TCK / 0.5
            if busy <= a.max_noise or time.time() >= deadline:
                if waited:
                    log(f"machine {'quiet' if busy <= a.max_noise else 'still busy'} "
                        f"({busy:.0f}% of a core used by others)")
                return
            if not waited:
                log(f"waiting up to {a.quiet_wait:g}s for other processes to calm down "
                    f"({busy:.0f}% of a core busy)")
                waited = True

    def measure(self, t, size, rnd):
        a = self.a
        p = t["proc"]
        if not p.alive():
            raise BenchError(f"{t['label']} died (rc={p.p.returncode}); "
                             f"log {p.logpath}:\n{p.tail()}")
        path = f"/{size_label(size)}.bin"
        self.wait_quiet()
        o0 = self.origin_reqs()
        cpu0 = rb.cpu_stat()
        st0 = rb.session_ticks(p.pid)
        ot0 = rb.session_ticks(self.origin.pid)
        ct0 = rb.children_cpu_s()
        w0 = time.time()
        argv, text = self.wrk(t["port"], path, a.duration)
        wall = time.time() - w0
        ct1 = rb.children_cpu_s()
        ot1 = rb.session_ticks(self.origin.pid)
        st1 = rb.session_ticks(p.pid)
        cpu1 = rb.cpu_stat()
        o1 = self.origin_reqs()
        rss, hwm, nproc = rb.session_mem_kb(p.pid)
        r = parse_wrk(text)
        reqs = r["requests"]
        server_s = (st1 - st0) / rb.CLK_TCK
        origin_s = (ot1 - ot0) / rb.CLK_TCK
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
               "server_processes": nproc, "rss_kb": rss, "hwm_kb": hwm,
               # the stub_status request that reads o1 is itself counted
               "origin_requests": o1 - o0 - 1 if o0 is not None and o1 is not None else None,
               "origin_cpu_s": origin_s, "client_cpu_s": client_s,
               # wrk's CPU per response: when it moves between rounds of the same proxy and
               # size, the machine's speed moved (between proxies it also differs: a slower
               # proxy means fewer responses per wake-up of wrk)
               "client_us_per_req": client_s * 1e6 / reqs if reqs else None,
               "server_core_busy_pct": core_pct(a.proxy_cpu),
               "client_core_busy_pct": core_pct(a.client_cpu),
               # user+nice+system of the machine minus proxy, origin and wrk: other processes
               "other_cpu_pct": max(0.0, 100.0 * (all_s - server_s - origin_s - client_s)
                                    / wall),
               "raw": text}
        self.results["runs"].append(row)
        log(f"{path} r{rnd} {t['label']:>13}: {r['rps']:8.0f} req/s  "
            f"{fmt(r['mib_s'], '.1f')} MiB/s  {fmt(row['cpu_us_per_req'], '.2f')} us/req  "
            f"p99 {fmt(r['p99_ms'], '.2f')} ms  errors {error_text(r)}  "
            f"origin reqs {fmt(row['origin_requests'], 'd')}  rss {rss / 1024:.1f} MiB  "
            f"wrk {fmt(row['client_us_per_req'], '.2f')} us/req  "
            f"server core {fmt(row['server_core_busy_pct'], '.0f')}%  "
            f"client core {fmt(row['client_core_busy_pct'], '.0f')}%  "
            f"other {row['other_cpu_pct']:.0f}%")

    def run(self):
        a = self.a
        self.setup()
        self.warm()
        n = len(self.targets)
        est = len(a.sizes) * n * (a.rounds * (a.duration + 0.7) + a.warmup + 0.2)
        log(f"{len(a.sizes)} size(s) x {n} proxies x {a.rounds} round(s) x {a.duration}s: "
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
        # still hits at the end?
        for t in self.targets:
            for path in self.objects:
                try:
                    status, hdrs, body = http_get(t["port"], path)
                except OSError as e:
                    raise BenchError(f"{t['label']} GET {path} after the runs: {e}")
                if status != 200 or body != self.objects[path] or not is_hit(t["kind"], hdrs):
                    raise BenchError(f"{t['label']} GET {path} after the runs: {status}, "
                                     f"{len(body)} bytes, cache header "
                                     f"{cache_header(t['kind'], hdrs)!r} (want a hit with "
                                     f"the file's bytes)")
        log("after the runs: every object still a hit with the file's bytes on every proxy")
        self.results["meta"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def cleanup(self):
        rb.stop_procs(self.procs)
        self.procs = []
        for d in (self.workdir, self.shm_dir):
            if d and os.path.isdir(d):
                if self.a.keep:
                    log(f"kept {d}")
                else:
                    shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ reporting

def report(R, a, partial=False):
    m = R["meta"]
    dirs = m.get("nginx_cache_dirs") or {}
    L = [f"## HTTP cache hits: sluice cache vs nginx proxy_cache ({m.get('started')}"
         + (", INCOMPLETE" if partial else "") + ")\n",
         f"sluice {m.get('binary')} ({m.get('versions', {}).get('sluice')}, built "
         f"{m.get('binary_mtime')}, sha256 {str(m.get('binary_sha256'))[:12]}); commit "
         f"{m.get('git_commit')}{' (dirty tree)' if m.get('git_dirty') else ''}; "
         f"{m.get('versions', {}).get('nginx')}; {m.get('versions', {}).get('wrk')}.\n",
         f"`wrk -t{a.wrk_threads} -c{a.connections} -d{a.duration}s --latency` keep-alive, "
         f"{a.rounds} round(s) after a {a.warmup}s warm-up per proxy, proxy order rotated "
         f"between rounds; medians"
         + ("" if a.no_pin else f"; proxies on CPU {a.proxy_cpu}, origin nginx and wrk on CPU "
                                f"{a.client_cpu}")
         + f". Origin: nginx serving random-byte files with `Cache-Control: max-age={MAX_AGE}`."
         f" sluice: `worker-threads {a.worker_threads}`, `access-log \"off\"`, "
         f"`server {{ cache {{ memory \"{a.memory}\"; max-object \"{a.max_object}\" }} }}`, "
         f"site `{m.get('site_cache', 'cache')}`, `route \"/\" {{ proxy \"origins\" }}` "
         "(bodies in memory). nginx: `worker_processes 1`, `proxy_cache_path DIR levels=1:2 "
         "keys_zone=c:64m max_size=1g inactive=60m use_temp_path=off`, `proxy_cache c; "
         "proxy_cache_valid 200 60m; proxy_cache_lock on`, `proxy_http_version 1.1`, "
         "`proxy_set_header Connection \"\"`, upstream `keepalive 64`, `access_log off`, "
         + ("`open_file_cache max=1000`, " if a.nginx_open_file_cache else "")
         + "`add_header X-Cache-Status $upstream_cache_status`; nginx's defaults otherwise. "
         "**nginx's proxy_cache keeps bodies in files**: every hit opens its cache file"
         + ("" if a.nginx_open_file_cache else " (no `open_file_cache`)")
         + " and reads or sendfiles the body from the page cache, also when the directory is "
         "on disk; sluice's hits come from its memory tier"
         + (" (" + "; ".join(f"{label}: {v['dir']} on {v['fstype'] or '?'}, "
                             + SENDFILE_TEXT[v.get("sendfile", "off")]
                             for label, v in dirs.items()) + ")" if dirs else "")
         + ". CPU µs/req = utime + stime of the proxy's processes (nginx: master, worker, "
         "cache manager and loader) from /proc / requests. MiB/s = wrk's Transfer/sec (bodies "
         "+ headers). errors = wrk socket errors + non-2xx/3xx. origin reqs = requests the "
         "origin served during the run (stub_status; 0 = every request was a hit). other % = "
         "CPU used by other processes meanwhile (a core = 100 %; above ~10 % the numbers are "
         "disturbed).\n"]
    warm = R.get("warm") or []
    if warm:
        ok = all(w["first_hit"] is not None and all(g["identical"] and g["status"] == 200
                                                     for g in w["gets"]) for w in warm)
        firsts = sorted({w["first_hit"] for w in warm if w["first_hit"] is not None})
        L.append("Warm-up and correctness: GET "
                 + ", ".join(dict.fromkeys(w["path"] for w in warm))
                 + " through each proxy until a hit: "
                 + ("every body identical to the file, first hit on GET #"
                    + "/".join(str(x) for x in firsts) if ok else "**FAILED**")
                 + "; origin requests while warming: "
                 + ", ".join(f"{w['target']} {w['path']} {fmt(w['origin_requests'], 'd')}"
                             for w in warm)
                 + ". Hit headers seen: "
                 + "; ".join(dict.fromkeys(
                     f"{w['target']}: {w['gets'][w['first_hit'] - 1]['cache_header']}"
                     for w in warm if w["first_hit"])) + ".\n")
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
                  ("rps", "mib_s", "cpu_us_per_req", "p50_ms", "p99_ms", "rss_kb",
                   "client_us_per_req",
                   "server_core_busy_pct", "client_core_busy_pct", "other_cpu_pct")}
            mm["rounds"] = [r["cpu_us_per_req"] for r in rs]
            mm["errors"] = sum(r["errors"] for r in rs)
            origin = [r["origin_requests"] for r in rs]
            mm["origin_requests"] = None if None in origin else sum(origin)
            med[label] = mm
        base = med.get("nginx", {}).get("cpu_us_per_req")
        ngx = [(mm["cpu_us_per_req"], label) for label, mm in med.items()
               if label.startswith("nginx") and mm["cpu_us_per_req"] is not None]
        best = min(ngx) if ngx else None
        rows = []
        for label, mm in med.items():
            c = mm["cpu_us_per_req"]
            rel = ("" if label == "nginx" or c is None or not base
                   else f"{100 * (c - base) / base:+.0f} %")
            rows.append([label, fmt(mm["rps"], ".0f"), fmt(mm["mib_s"], ".1f"),
                         fmt(c, ".2f"), " / ".join(fmt(x, ".2f") for x in mm["rounds"]), rel,
                         fmt(mm["p50_ms"], ".2f"), fmt(mm["p99_ms"], ".2f"), str(mm["errors"]),
                         fmt(mm["origin_requests"], "d"),
                         fmt(None if mm["rss_kb"] is None else mm["rss_kb"] / 1024, ".1f"),
                         fmt(mm["server_core_busy_pct"], ".0f"),
                         fmt(mm["client_core_busy_pct"], ".0f"),
                         fmt(mm["other_cpu_pct"], ".0f")])
        L.append(f"### cache hits, GET /{size_label(size)}.bin ({size} bytes)\n")
        L.append(rb.md_table(["proxy", "req/s", "MiB/s", "CPU µs/req", "per round",
                              "CPU vs nginx", "p50 ms", "p99 ms", "errors", "origin reqs",
                              "RSS MiB", "proxy core %", "client core %", "other %"],
                             rows, "lrrrlrrrrrrrrr") + "\n")
        sl = med.get("sluice", {}).get("cpu_us_per_req")
        notes = []
        if best and sl is not None and len(ngx) > 1:
            notes.append(f"cheapest nginx variant here: {best[1]} ({best[0]:.2f} µs/req), "
                         f"sluice {100 * (sl - best[0]) / best[0]:+.0f} % against it")
        notes.append("wrk's own CPU µs/req per round (a gauge of the machine's speed; "
                     "compare it between rounds of one proxy): "
                     + ", ".join(f"{label} " + " / ".join(
                         fmt(r["client_us_per_req"], ".2f") for r in rs_size
                         if r["target"] == label) for label in med))
        L.append("_" + "; ".join(notes) + "._\n")
    if runs:
        L.append("origin reqs is summed over the rounds. When the client core (wrk + the idle "
                 "origin) is ~100 % busy the client is the limit: compare CPU µs/req, not "
                 "req/s.\n")
    return "\n".join(L)


def save(R, a, partial=False):
    os.makedirs(a.out_dir, exist_ok=True)
    stem = os.path.join(a.out_dir, f"cache-{a.stamp}")
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
                    help="object sizes, e.g. 1k 64k 1m (default 1k 64k)")
    ap.add_argument("--duration", type=int, help="seconds per measured run (default 10)")
    ap.add_argument("--rounds", type=int, help="rounds per size, order rotated (default 3)")
    ap.add_argument("--warmup", type=int, help="seconds of unmeasured load per proxy and "
                                               "size (default 2)")
    ap.add_argument("--warm-gets", type=int, default=6,
                    help="most GETs per proxy and object to see a hit (default 6)")
    ap.add_argument("--memory", default="256MiB", help="sluice cache memory (default 256MiB)")
    ap.add_argument("--max-object", default="8MiB",
                    help="sluice cache max-object (default 8MiB)")
    ap.add_argument("--no-tmpfs", action="store_true",
                    help="do not run the second nginx (cache directory on tmpfs)")
    ap.add_argument("--tmpfs-dir", default="/dev/shm",
                    help="where the tmpfs nginx keeps its cache (default /dev/shm)")
    ap.add_argument("--nginx-open-file-cache", action="store_true",
                    help="give both nginx `open_file_cache max=1000` (default: nginx's "
                         "default, off: every hit opens its cache file)")
    ap.add_argument("--sendfile-variant", choices=("on", "nopush", "none"), default="on",
                    help="the `nginx (sendfile)` variant: `sendfile on` (default), `sendfile "
                         "on; tcp_nopush on` (nopush), or none (leave it out)")
    ap.add_argument("--connections", type=int, default=50, help="wrk -c (default 50)")
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (default 1)")
    ap.add_argument("--worker-threads", type=int, default=1,
                    help="sluice's worker-threads (default 1, like nginx's one worker)")
    ap.add_argument("--client-cpu", default="0", help="CPU list for origin and wrk "
                                                      "(default 0)")
    ap.add_argument("--proxy-cpu", default="1", help="CPU list for the proxies (default 1)")
    ap.add_argument("--no-pin", action="store_true", help="do not use taskset")
    ap.add_argument("--max-noise", type=float, default=25.0, metavar="PCT",
                    help="before each run wait (--quiet-wait) until other processes use at "
                         "most PCT%% of a core (default 25; -1 = off)")
    ap.add_argument("--quiet-wait", type=float, default=20.0, metavar="S",
                    help="longest such wait (default 20; 0 = off)")
    ap.add_argument("--port-base", type=int, default=19700,
                    help="first port to try for origin and proxies (default 19700)")
    ap.add_argument("--ready-timeout", type=float, default=20.0)
    ap.add_argument("--out-dir", default=rb.OUT_DIR,
                    help="where cache-<timestamp>.txt / .json go (default bench/out)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directories (objects, configs, caches, logs)")
    a = ap.parse_args()

    a.duration = a.duration if a.duration is not None else (3 if a.quick else 10)
    a.rounds = a.rounds if a.rounds is not None else (1 if a.quick else 3)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.quick else 2)
    if a.duration < 1 or a.rounds < 1 or a.warmup < 0 or a.warm_gets < 2:
        ap.error("--duration and --rounds must be >= 1, --warmup >= 0, --warm-gets >= 2")
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
    for opt in ("memory", "max_object"):
        if not re.fullmatch(r"[0-9A-Za-z]+", getattr(a, opt)):
            ap.error(f"--{opt.replace('_', '-')}: a size such as 256MiB")
    a.sluice_bin = os.path.abspath(a.sluice_bin)
    a.out_dir = os.path.abspath(a.out_dir)
    a.tmpfs_dir = os.path.abspath(a.tmpfs_dir)
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
        # this script reads /proc between runs: keep it off the proxies' core
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
        bench = CacheBench(a)
        bench.run()
        text, stem = save(bench.results, a)
        print(text)
        log(f"written: {stem}.txt (and .json with the raw wrk output)")
    except (BenchError, KeyboardInterrupt, SystemExit) as e:
        if isinstance(e, BenchError):
            print(f"bench/cache.py: error: {e}", file=sys.stderr)
            rc = 2
        elif isinstance(e, KeyboardInterrupt):
            print("bench/cache.py: interrupted", file=sys.stderr)
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
