#!/usr/bin/env python3
"""Sluice macro benchmark: sluice vs nginx as a reverse proxy on one small machine.

An nginx origin and the load generator (wrk / h2load) run pinned to one CPU, the proxy
under test to another.  Every proxy is measured in interleaved rounds; the script prints
one markdown table of medians per scenario and writes every raw number to
bench/out/results.json.  Python 3 standard library only.  See bench/README.md.
"""

import argparse
import errno
import hashlib
import http.client
import json
import os
import re
import resource
import select
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, "bench", "out")
DEFAULT_SLUICE = os.path.join(REPO, "target", "release", "sluice")
CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX_USER = "user root;\n" if os.geteuid() == 0 else ""  # root: workers must read the workdir

SCENARIOS = {
    "keepalive-1k": {"kind": "wrk", "path": "/", "headers": [], "body": 1024,
                     "desc": "HTTP/1.1 keep-alive, GET / (1 KiB body)"},
    "keepalive-64k": {"kind": "wrk", "path": "/64k", "headers": [], "body": 65536,
                      "desc": "HTTP/1.1 keep-alive, GET /64k (64 KiB body)"},
    "close-1k": {"kind": "wrk", "path": "/", "headers": ["Connection: close"], "body": 1024,
                 "desc": "HTTP/1.1, `Connection: close` on every request "
                         "(new client connection per request), GET / (1 KiB body)"},
    "h2c-1k": {"kind": "h2load", "path": "/", "body": 1024,
               "desc": "downstream HTTP/2 cleartext (prior knowledge), GET / (1 KiB body); "
                       "upstream HTTP/1.1"},
    "idle-10k": {"kind": "idle",
                 "desc": "memory for idle keep-alive client connections that each served "
                         "one GET /"},
}
LOAD_SCENARIOS = [s for s in SCENARIOS if SCENARIOS[s]["kind"] != "idle"]


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ------------------------------------------------------------------ /proc accounting

def proc_stat(pid):
    """(session, utime+stime ticks) of one process (all its threads), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # the comm field may contain spaces and parentheses: split after the last ')'
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state) of proc(5); field N is fields[N - 3]
    return int(fields[3]), int(fields[11]) + int(fields[12])


def session_pids(sid):
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st and st[0] == sid:
                pids.append(int(d))
    return pids


def session_ticks(sid):
    total = 0
    for pid in session_pids(sid):
        st = proc_stat(pid)
        if st:
            total += st[1]
    return total


def session_mem_kb(sid):
    """(VmRSS, VmHWM, number of processes) summed over a session, KiB."""
    rss = hwm = n = 0
    for pid in session_pids(sid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
            n += 1
        except OSError:
            pass
    return rss, hwm, n


def cpu_stat():
    """{'all' | cpu index: (user+nice+system, busy, total, steal)} in ticks, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d*)\s+(.*)", line)
            if not m:
                continue
            v = [int(x) for x in m.group(2).split()] + [0] * 10
            total = sum(v[:8])
            busy = total - v[3] - v[4]  # minus idle, iowait
            key = int(m.group(1)) if m.group(1) else "all"
            out[key] = (v[0] + v[1] + v[2], busy, total, v[7])
    return out


def children_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def parse_cpulist(spec):
    cpus = []
    for part in spec.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            cpus.extend(range(int(a), int(b) + 1))
        elif part:
            cpus.append(int(part))
    if not cpus:
        raise ValueError(spec)
    return cpus


# ------------------------------------------------------------------ processes

class Proc:
    """A process started in its own session, so that pid == pgid == sid."""

    def __init__(self, label, argv, logpath, env=None):
        self.label = label
        self.argv = argv
        self.logpath = logpath
        self.logf = open(logpath, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                  stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.pid = self.p.pid
        self.stopped = False

    def alive(self):
        return self.p.poll() is None

    def killpg(self, sig):
        if self.alive():  # only while the leader lives: the pgid cannot have been reused
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def tail(self, n=30):
        try:
            with open(self.logpath, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


def stop_procs(procs, grace=5.0):
    """SIGTERM each process group we started, SIGKILL after `grace` s, then reap stragglers."""
    procs = [p for p in procs if not p.stopped]
    for p in procs:
        p.killpg(signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline and any(p.alive() for p in procs):
        time.sleep(0.05)
    for p in procs:
        p.killpg(signal.SIGKILL)
        try:
            p.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        # members of the session that outlived the leader (should not happen)
        for pid in session_pids(p.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.logf.close()
        p.stopped = True


def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Ports:
    def __init__(self, start):
        self.next = start
        self.used = set()

    def take(self, want=None):
        if want is not None:
            if want in self.used or not port_free(want):
                raise BenchError(f"port 127.0.0.1:{want} is in use")
            self.used.add(want)
            return want
        while self.next in self.used or not port_free(self.next):
            self.next += 1
        self.used.add(self.next)
        self.next += 1
        return self.next - 1


def http_get(port, path, timeout=3.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_http_ready(proc, port, paths, timeout, what):
    """Wait until each (path, body size) answers 200 with exactly that many bytes."""
    deadline = time.time() + timeout
    last = "no answer"
    while time.time() < deadline:
        if proc is not None and not proc.alive():
            raise BenchError(f"{what} exited during start-up (rc={proc.p.returncode}); "
                             f"log {proc.logpath}:\n{proc.tail()}")
        try:
            ok = True
            for path, size in paths:
                st, body = http_get(port, path)
                if st != 200 or len(body) != size:
                    last = f"GET {path} answered {st} with {len(body)} bytes (want 200, {size})"
                    ok = False
                    break
            if ok:
                return
        except OSError as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.1)
    raise BenchError(f"{what} on 127.0.0.1:{port} not ready after {timeout:.0f}s ({last})"
                     + (f"; log {proc.logpath}:\n{proc.tail()}" if proc else ""))


# ------------------------------------------------------------------ configs

def nginx_common(d, nofile):
    return f"""{NGINX_USER}worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
"""


def nginx_temp_paths(d):
    return "".join(f"    {k}_temp_path {d}/tmp-{k};\n"
                   for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def write_origin(workdir, port, status_port, nofile):
    d = os.path.join(workdir, "origin")
    os.makedirs(os.path.join(d, "html"), exist_ok=True)
    pattern = b"sluice-bench-0123456789abcdefghijklmnopqrstuvwxyz\n"
    for name, size in (("body-1k", 1024), ("body-64k", 65536)):
        with open(os.path.join(d, "html", name), "wb") as f:
            f.write((pattern * (size // len(pattern) + 1))[:size])
    conf = f"""# generated by bench/run.py: the origin server
{nginx_common(d, nofile)}events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    open_file_cache max=16 inactive=600s;
    default_type application/octet-stream;
{nginx_temp_paths(d)}    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {d}/html;
        location = / {{ rewrite ^ /body-1k break; }}
        location = /64k {{ rewrite ^ /body-64k break; }}
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


def write_nginx_proxy(workdir, name, port, h2c_port, origin_port, worker_connections, nofile,
                      keepalive=64, listen_opts="", server_extra=""):
    """nginx as the reference reverse proxy. `listen_opts` go on the main listen line (e.g.
    "ssl http2 "), `server_extra` is more `server` block text (e.g. ssl_* directives)."""
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    h2c = f"        listen 127.0.0.1:{h2c_port} http2 backlog=4096;\n" if h2c_port else ""
    conf = f"""# generated by bench/: nginx as the reference reverse proxy
{nginx_common(d, nofile)}events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
{nginx_temp_paths(d)}    upstream origin {{
        server 127.0.0.1:{origin_port};
        keepalive {keepalive};
        keepalive_requests 1000000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port} {listen_opts}backlog=4096;
{h2c}{server_extra}        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # default proxy_buffers / proxy_buffer_size; no spilling to temp files
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return ["nginx", "-p", d, "-e", f"{d}/error.log", "-c", path]


def write_sluice_kdl(workdir, name, port, origin_port, max_connections):
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    conf = f"""// generated by bench/run.py (idle-10k): like `sluice proxy --access-log off`,
// but with room for more than the default 10000 client connections
server {{
    access-log "off"
    shutdown-grace "1s"
}}

listener "127.0.0.1:{port}" {{
    max-connections {max_connections}
}}

upstream "origins" {{
    server "127.0.0.1:{origin_port}"
}}

site "*" {{
    route "/" {{
        proxy "origins"
    }}
}}
"""
    path = os.path.join(d, "sluice.kdl")
    with open(path, "w") as f:
        f.write(conf)
    return path


# ------------------------------------------------------------------ load generators

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_wrk(text):
    r = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", text)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r["rps"] = float(m.group(1)) if m else 0.0
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
        r[f"p{pct}_ms"] = float(m.group(1)) * UNIT_MS[m.group(2)] if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                  (int(x) for x in m.groups()))) if m else {}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    r["errors"] = sum(r["socket_errors"].values()) + r["non2xx"]
    return r


def parse_h2load(text, logfile):
    r = {}
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    r["rps"] = float(m.group(2)) if m else 0.0
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    if m:
        total, started, done, ok, failed, errored, tmo = (int(x) for x in m.groups())
    else:
        done = ok = failed = errored = tmo = 0
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    codes = [int(x) for x in m.groups()] if m else [0, 0, 0, 0]
    m = re.search(r"traffic: .*?, .*? headers .*?, [\d.]+\w* \((\d+)\) data", text)
    r["data_bytes"] = int(m.group(1)) if m else None
    r["requests"] = done
    r["succeeded"] = ok
    r["status_codes"] = dict(zip(("2xx", "3xx", "4xx", "5xx"), codes))
    r["h2load_failed"], r["h2load_errored"], r["h2load_timeout"] = failed, errored, tmo
    r["non2xx"] = sum(codes[1:])
    r["errors"] = failed + errored + tmo + r["non2xx"]
    m = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+"
                  r"([\d.]+)(us|ms|s)", text)
    if m:
        r["min_ms"] = float(m.group(1)) * UNIT_MS[m.group(2)]
        r["max_ms"] = float(m.group(3)) * UNIT_MS[m.group(4)]
        r["mean_ms"] = float(m.group(5)) * UNIT_MS[m.group(6)]
    durations = []
    if logfile and os.path.exists(logfile):
        with open(logfile) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1].strip() != "-1":
                    durations.append(int(parts[2]))
    r["logged_requests"] = len(durations)
    if durations:
        durations.sort()
        for pct in (50, 75, 90, 99):
            idx = min(len(durations) - 1, max(0, -(-pct * len(durations) // 100) - 1))
            r[f"p{pct}_ms"] = durations[idx] / 1000.0
    else:
        for pct in (50, 75, 90, 99):
            r[f"p{pct}_ms"] = None
    return r


# ------------------------------------------------------------------ idle connections

def response_done(buf):
    """None while incomplete, else (status, keep_alive, total length) of one response."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1").split("\r\n")
    try:
        status = int(head[0].split()[1])
    except (IndexError, ValueError):
        return (-1, False, len(buf))
    hdrs = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip().lower()
    keep = "close" not in hdrs.get("connection", "")
    pos = end + 4
    if "chunked" in hdrs.get("transfer-encoding", ""):
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                return None
            size = int(buf[pos:nl].split(b";")[0], 16)
            pos = nl + 2 + size + 2
            if len(buf) < pos:
                return None
            if size == 0:  # no trailers expected
                return (status, keep, pos)
    cl = int(hdrs.get("content-length", "0"))
    return (status, keep, pos + cl) if len(buf) >= pos + cl else None


def open_idle_connections(port, count, timeout, max_inflight=256):
    """Open `count` keep-alive connections, each serving one GET / completely; return
    (list of open sockets, stats dict).  Non-blocking, bounded by `timeout` seconds."""
    req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: sluice-bench-idle\r\n\r\n"
    sel = selectors.DefaultSelector()
    held, failures = [], {}
    started = inflight = 0
    t0 = time.monotonic()
    deadline = t0 + timeout

    def fail(s, why):
        nonlocal inflight
        failures[why] = failures.get(why, 0) + 1
        inflight -= 1
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()

    try:
        while len(held) + sum(failures.values()) < count and time.monotonic() < deadline:
            while inflight < max_inflight and started < count:
                started += 1
                inflight += 1
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex(("127.0.0.1", port))
                if err not in (0, errno.EINPROGRESS):
                    failures[f"connect: {os.strerror(err)}"] = \
                        failures.get(f"connect: {os.strerror(err)}", 0) + 1
                    inflight -= 1
                    s.close()
                    continue
                sel.register(s, selectors.EVENT_WRITE, {"state": "connect", "sent": 0,
                                                        "buf": b""})
            for key, _ev in sel.select(timeout=0.2):
                s, st = key.fileobj, key.data
                if st["state"] == "connect":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(s, f"connect: {os.strerror(err)}")
                        continue
                    st["state"] = "send"
                if st["state"] == "send":
                    try:
                        st["sent"] += s.send(req[st["sent"]:])
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        fail(s, f"send: {e.strerror}")
                        continue
                    if st["sent"] == len(req):
                        st["state"] = "recv"
                        sel.modify(s, selectors.EVENT_READ, st)
                    continue
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    fail(s, f"recv: {e.strerror}")
                    continue
                if not data:
                    fail(s, "closed before the response was complete")
                    continue
                st["buf"] += data
                done = response_done(st["buf"])
                if done is None:
                    continue
                status, keep, _n = done
                if status != 200:
                    fail(s, f"status {status}")
                elif not keep:
                    fail(s, "response said Connection: close")
                else:
                    sel.unregister(s)
                    inflight -= 1
                    held.append(s)
    finally:
        # whatever is still half-way (timeout) is closed
        for key in list(sel.get_map().values()):
            key.fileobj.close()
            if time.monotonic() >= deadline:
                failures["gave up (timeout)"] = failures.get("gave up (timeout)", 0) + 1
        sel.close()
    if started < count:
        failures["not started (timeout)"] = count - started
    stats = {"requested": count, "established": len(held), "failures": failures,
             "open_s": round(time.monotonic() - t0, 3)}
    return held, stats


def count_still_open(socks):
    """How many sockets were not closed by the peer (no EOF / error pending)."""
    poller = select.poll()
    fdmap = {}
    for s in socks:
        poller.register(s.fileno(), select.POLLIN | select.POLLRDHUP)
        fdmap[s.fileno()] = s
    closed = 0
    for fd, ev in poller.poll(0):
        if ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
            closed += 1
            continue
        try:
            if fdmap[fd].recv(1, socket.MSG_PEEK) == b"":
                closed += 1
        except OSError:
            closed += 1
    return len(socks) - closed


# ------------------------------------------------------------------ the benchmark

class Target:
    def __init__(self, label, kind, binary=None, env=None):
        self.label = label
        self.kind = kind            # "sluice" or "nginx"
        self.binary = binary
        self.env = env or {}
        self.port = None
        self.h2c_port = None        # nginx needs a separate `listen ... http2` port
        self.proc = None
        self.argv = None
        self.version = None


class Bench:
    def __init__(self, args):
        self.args = args
        self.procs = []
        self.workdir = None
        self.origin = None
        self.results = {"runs": [], "idle": [], "medians": {}}

    # -- helpers
    def start(self, label, argv, env=None):
        p = Proc(label, argv, os.path.join(self.workdir, f"{label}.log"), env=env)
        self.procs.append(p)
        return p

    def stop(self, proc):
        stop_procs([proc])
        self.procs = [p for p in self.procs if p is not proc]

    def origin_accepts(self):
        try:
            st, body = http_get(self.args.origin_status_port, "/status")
        except OSError:
            return None
        m = re.search(rb"server accepts handled requests\s+(\d+)\s+(\d+)\s+(\d+)", body)
        return int(m.group(1)) if st == 200 and m else None

    def taskset(self, cpus, argv):
        return ["taskset", "-c", cpus] + argv

    def sluice_env(self, target):
        env = dict(os.environ)
        env.update(self.args.sluice_env_dict)
        env.update(target.env)
        return env

    # -- proxies
    def start_target(self, t, ports, idle=False):
        a = self.args
        suffix = "-idle" if idle else ""
        t.port = ports.take()
        if t.kind == "sluice":
            if idle:
                kdl = write_sluice_kdl(self.workdir, f"{t.label}{suffix}", t.port, a.origin_port,
                                       max(20000, a.idle_conns * 2))
                chk = subprocess.run([t.binary, "check", "-c", kdl], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=self.sluice_env(t))
                if chk.returncode != 0:
                    raise BenchError(f"`{t.binary} check -c {kdl}` failed:\n"
                                     + chk.stdout.decode(errors="replace"))
                argv = [t.binary, "run", "-c", kdl]
            else:
                argv = [t.binary, "proxy", "--listen", f"127.0.0.1:{t.port}",
                        "--to", f"http://127.0.0.1:{a.origin_port}", "--access-log", "off"]
            env = self.sluice_env(t)
        else:
            if not idle:
                t.h2c_port = ports.take()
            wc = min(a.nofile - 100, 20000) if idle else 10240
            argv = write_nginx_proxy(self.workdir, f"{t.label}{suffix}", t.port,
                                     None if idle else t.h2c_port, a.origin_port, wc, a.nofile,
                                     a.nginx_keepalive)
            env = None
        t.argv = self.taskset(a.proxy_cpu, argv)
        t.proc = self.start(f"{t.label}{suffix}", t.argv, env=env)
        wait_http_ready(t.proc, t.port, [("/", 1024), ("/64k", 65536)], a.ready_timeout,
                        f"proxy {t.label!r}")
        log(f"{t.label}{suffix}: pid {t.proc.pid}, 127.0.0.1:{t.port}"
            + (f" (h2c on :{t.h2c_port})" if t.h2c_port else "")
            + f", cpu {a.proxy_cpu}: {' '.join(t.argv)}")

    def verify_h2c(self, t):
        port = t.h2c_port or t.port
        n = 20
        out = subprocess.run(self.taskset(self.args.client_cpu,
                                          ["h2load", "-n", str(n), "-c", "1", "-m", "1",
                                           f"http://127.0.0.1:{port}/"]),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        text = out.stdout.decode(errors="replace")
        r = parse_h2load(text, None)
        if r["succeeded"] != n or r["status_codes"]["2xx"] != n or r["data_bytes"] != n * 1024:
            raise BenchError(f"h2c check of {t.label!r} on :{port} failed (want {n} x 200 with "
                             f"1024-byte bodies):\n{text}")

    # -- one measured run
    def run_client(self, t, scen, duration, measured):
        a = self.args
        sc = SCENARIOS[scen]
        if sc["kind"] == "wrk":
            argv = ["wrk", "-t", str(a.wrk_threads), "-c", str(a.connections),
                    "-d", f"{duration}s", "--latency"]
            for h in sc["headers"]:
                argv += ["-H", h]
            argv.append(f"http://127.0.0.1:{t.port}{sc['path']}")
            logfile = None
        else:
            port = t.h2c_port or t.port
            argv = ["h2load", "-t", "1", "-c", str(a.h2_clients), "-m", str(a.h2_streams),
                    "-D", str(duration)]
            logfile = None
            if measured:
                logfile = os.path.join(self.workdir, "h2load-requests.log")
                if os.path.exists(logfile):
                    os.unlink(logfile)
                argv += ["--log-file", logfile]
            argv.append(f"http://127.0.0.1:{port}{sc['path']}")
        argv = self.taskset(a.client_cpu, argv)
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=duration + 60)
        text = r.stdout.decode(errors="replace")
        if r.returncode != 0:
            raise BenchError(f"{' '.join(argv)} exited with {r.returncode}:\n{text}")
        parsed = parse_wrk(text) if sc["kind"] == "wrk" else parse_h2load(text, logfile)
        return argv, text, parsed

    def measure(self, t, scen, rnd):
        a = self.args
        if not t.proc.alive():
            raise BenchError(f"proxy {t.label!r} died (rc={t.proc.p.returncode}); "
                             f"log {t.proc.logpath}:\n{t.proc.tail()}")
        acc0 = self.origin_accepts()
        cpu0 = cpu_stat()
        pt0 = session_ticks(t.proc.pid)
        ot0 = session_ticks(self.origin.pid)
        ct0 = children_cpu_s()
        w0 = time.time()
        argv, text, r = self.run_client(t, scen, a.duration, True)
        wall = time.time() - w0
        ct1 = children_cpu_s()
        ot1 = session_ticks(self.origin.pid)
        pt1 = session_ticks(t.proc.pid)
        cpu1 = cpu_stat()
        acc1 = self.origin_accepts()
        rss, hwm, nproc = session_mem_kb(t.proc.pid)

        proxy_s = (pt1 - pt0) / CLK_TCK
        origin_s = (ot1 - ot0) / CLK_TCK
        client_s = ct1 - ct0
        reqs = r["requests"]
        # the status request that reads acc1 is itself one accepted connection
        new_up = acc1 - acc0 - 1 if acc0 is not None and acc1 is not None else None

        def core_pct(cpus):
            busy = sum(cpu1[c][1] - cpu0[c][1] for c in cpus if c in cpu1)
            tot = sum(cpu1[c][2] - cpu0[c][2] for c in cpus if c in cpu1)
            return 100.0 * busy / tot if tot else None

        sys_s = (cpu1["all"][0] - cpu0["all"][0]) / CLK_TCK
        run = {
            "scenario": scen, "target": t.label, "round": rnd, "client_argv": argv,
            "wall_s": round(wall, 3), **r,
            "proxy_cpu_s": proxy_s,
            "cpu_us_per_req": proxy_s * 1e6 / reqs if reqs else None,
            "rss_kb": rss, "hwm_kb": hwm, "proxy_processes": nproc,
            "upstream_new_conns": new_up,
            "reuse_pct": 100.0 * (1 - new_up / reqs) if reqs and new_up is not None else None,
            "origin_cpu_s": origin_s, "client_cpu_s": client_s,
            # the origin does the same work per request whatever the proxy: if this moves
            # between rounds, the machine itself got slower or faster (noisy neighbours)
            "origin_us_per_req": origin_s * 1e6 / reqs if reqs else None,
            "client_core_busy_pct": core_pct(a.client_cpus),
            "proxy_core_busy_pct": core_pct(a.proxy_cpus),
            # user+nice+system time of the whole machine minus proxy, origin and client:
            # other processes (e.g. a compile) competing for the two cores.  Approximate.
            "other_cpu_pct": max(0.0, 100.0 * (sys_s - proxy_s - origin_s - client_s) / wall),
            "steal_pct": 100.0 * (cpu1["all"][3] - cpu0["all"][3]) / CLK_TCK / wall,
            "raw": text,
        }
        return run

    def wait_quiet(self):
        """Wait (at most --quiet-wait s) until other processes use less than --max-noise % of
        a core: our own processes are idle between runs, so all CPU use counts as noise."""
        a = self.args
        if a.max_noise < 0 or a.quiet_wait <= 0:
            return
        deadline = time.time() + a.quiet_wait
        waited = False
        while True:
            c0 = cpu_stat()["all"]
            time.sleep(0.5)
            c1 = cpu_stat()["all"]
            busy = 100.0 * (c1[0] - c0[0]) / CLK_TCK / 0.5
            if busy <= a.max_noise or time.time() >= deadline:
                if waited:
                    log(f"machine {'quiet' if busy <= a.max_noise else 'still busy'} "
                        f"({busy:.0f}% of a core used by others)")
                return
            if not waited:
                log(f"waiting up to {a.quiet_wait:g}s for other processes to calm down "
                    f"({busy:.0f}% of a core busy)")
                waited = True

    # -- idle connections
    def idle_one(self, t, ports):
        a = self.args
        self.start_target(t, ports, idle=True)
        socks = []
        try:
            time.sleep(1.0)
            rss0, _hwm, _n = session_mem_kb(t.proc.pid)
            acc0 = self.origin_accepts()
            socks, st = open_idle_connections(t.port, a.idle_conns, a.idle_timeout)
            time.sleep(a.idle_hold)
            if not t.proc.alive():
                raise BenchError(f"proxy {t.label!r} died while holding idle connections "
                                 f"(rc={t.proc.p.returncode}); log:\n{t.proc.tail()}")
            rss1, hwm1, nproc = session_mem_kb(t.proc.pid)
            acc1 = self.origin_accepts()
            still = count_still_open(socks)
            extra_kb = rss1 - rss0
            res = {"target": t.label, "argv": t.argv, **st, "still_open_after_hold": still,
                   "hold_s": a.idle_hold, "rss_before_kb": rss0, "rss_after_kb": rss1,
                   "hwm_after_kb": hwm1, "proxy_processes": nproc,
                   "extra_rss_kb": extra_kb,
                   "extra_bytes_per_conn": (extra_kb * 1024 / st["established"]
                                            if st["established"] else None),
                   "upstream_new_conns": (acc1 - acc0 - 1
                                          if acc0 is not None and acc1 is not None else None)}
            log(f"idle-10k {t.label}: {st['established']}/{a.idle_conns} connections in "
                f"{st['open_s']:.1f}s, {still} still open after {a.idle_hold}s, RSS "
                f"{rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB (+{extra_kb / 1024:.1f} MiB)"
                + (f", failures {st['failures']}" if st["failures"] else ""))
            return res
        finally:
            for s in socks:
                s.close()
            self.stop(t.proc)

    # -- main flow
    def run(self):
        a = self.args
        self.workdir = a.workdir or tempfile.mkdtemp(prefix="sluice-bench.")
        os.makedirs(self.workdir, exist_ok=True)
        if NGINX_USER:
            os.chmod(self.workdir, 0o755)
        log(f"workdir (configs, logs): {self.workdir}")
        R = self.results
        R["meta"] = meta(a, self.workdir)
        R["meta"]["binaries"] = snapshot_binaries(a.targets, self.workdir)
        ports = Ports(a.origin_port + 10)
        ports.take(a.origin_port)
        ports.take(a.origin_status_port)

        self.origin = self.start("origin", self.taskset(
            a.client_cpu, write_origin(self.workdir, a.origin_port, a.origin_status_port,
                                       a.nofile)))
        wait_http_ready(self.origin, a.origin_port, [("/", 1024), ("/64k", 65536)],
                        a.ready_timeout, "origin nginx")
        if self.origin_accepts() is None:
            raise BenchError("origin stub_status does not answer")
        log(f"origin: nginx pid {self.origin.pid}, 127.0.0.1:{a.origin_port} "
            f"(stub_status :{a.origin_status_port}/status), cpu {a.client_cpu}")

        targets = a.targets
        load = [s for s in a.scenarios if s in LOAD_SCENARIOS]
        if load:
            for t in targets:
                self.start_target(t, ports)
                if "h2c-1k" in load:
                    self.verify_h2c(t)
            n_runs = len(load) * len(targets) * a.rounds
            est = n_runs * (a.duration + 0.5) + len(load) * len(targets) * (a.warmup + 0.5)
            log(f"{len(load)} load scenario(s) x {len(targets)} target(s) x {a.rounds} "
                f"round(s) x {a.duration}s: about {est / 60:.1f} min")
            for scen in load:
                if a.warmup:
                    for t in targets:
                        self.run_client(t, scen, a.warmup, False)
                for rnd in range(1, a.rounds + 1):
                    for t in targets:
                        for attempt in range(1, a.noise_retries + 2):
                            self.wait_quiet()
                            run = self.measure(t, scen, rnd)
                            run["attempt"] = attempt
                            run["noisy"] = (a.max_noise >= 0
                                            and run["other_cpu_pct"] > a.max_noise)
                            last = attempt > a.noise_retries or not run["noisy"]
                            log(run_line(run) + ("" if not run["noisy"] else
                                                 "  NOISY" + (", kept" if last else
                                                              ", repeating")))
                            if last:
                                break
                        R["runs"].append(run)
                R["medians"][scen] = medians(R["runs"], scen, [t.label for t in targets])
                self.save()
            # the idle scenario starts fresh proxies: stop the loaded ones first
            for t in targets:
                self.stop(t.proc)
        if "idle-10k" in a.scenarios:
            for t in targets:
                fresh = Target(t.label, t.kind, t.binary, t.env)
                R["idle"].append(self.idle_one(fresh, ports))
                self.save()
        R["meta"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.save()
        print(report(R, a))
        log(f"raw results: {a.out}")

    def save(self):
        os.makedirs(os.path.dirname(self.args.out), exist_ok=True)
        tmp = self.args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.results, f, indent=1)
        os.replace(tmp, self.args.out)

    def cleanup(self):
        stop_procs(self.procs)
        self.procs = []


# ------------------------------------------------------------------ reporting

def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


MEDIAN_KEYS = ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "rss_kb", "hwm_kb",
               "upstream_new_conns", "reuse_pct", "client_core_busy_pct", "proxy_core_busy_pct",
               "other_cpu_pct", "steal_pct", "mean_ms", "max_ms", "origin_us_per_req")


def medians(runs, scen, labels):
    out = {}
    for label in labels:
        rs = [r for r in runs if r["scenario"] == scen and r["target"] == label]
        if not rs:
            continue
        m = {k: median([r.get(k) for r in rs]) for k in MEDIAN_KEYS}
        rps = [r["rps"] for r in rs]
        m["rps_spread_pct"] = 100.0 * (max(rps) - min(rps)) / m["rps"] if m["rps"] else None
        cpu = [r["cpu_us_per_req"] for r in rs if r.get("cpu_us_per_req") is not None]
        m["cpu_spread_pct"] = (100.0 * (max(cpu) - min(cpu)) / m["cpu_us_per_req"]
                               if cpu and m["cpu_us_per_req"] else None)
        m["errors"] = sum(r["errors"] for r in rs)
        m["requests"] = sum(r["requests"] for r in rs)
        m["rounds"] = len(rs)
        m["noisy_runs"] = sum(1 for r in rs if r.get("noisy"))
        out[label] = m
    return out


def run_line(r):
    return (f"{r['scenario']} r{r['round']} {r['target']:>14}: {r['rps']:9.0f} req/s  "
            f"p50 {fmt(r['p50_ms'], '.3f')} p99 {fmt(r['p99_ms'], '.3f')} ms  "
            f"cpu {fmt(r['cpu_us_per_req'], '.1f')} us/req  "
            f"rss {r['rss_kb'] / 1024:.1f} MiB  up-conns {fmt(r['upstream_new_conns'], 'd')}  "
            f"errors {r['errors']}  proxy-core {fmt(r['proxy_core_busy_pct'], '.0f')}%  "
            f"client-core {fmt(r['client_core_busy_pct'], '.0f')}%  "
            f"other {r['other_cpu_pct']:.0f}%")


def md_table(cols, rows, align):
    out = ["| " + " | ".join(cols) + " |",
           "|" + "|".join("---" if al == "l" else "---:" for al in align) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def report(R, a):
    lines = [f"\n## Sluice macro benchmark ({R['meta']['started']})\n",
             f"wrk -t{a.wrk_threads} -c{a.connections} -d{a.duration}s --latency / "
             f"h2load -t1 -c{a.h2_clients} -m{a.h2_streams} -D {a.duration}; "
             f"{a.rounds} round(s) interleaved, medians (errors: sum over rounds); "
             f"origin + load generator on CPU {a.client_cpu}, proxy on CPU {a.proxy_cpu}.\n"]
    bins = R["meta"].get("binaries") or {}
    if bins:
        lines.append("Sluice builds: " + "; ".join(
            f"{label} = {b['path']} ({b['mtime']}, sha256 {b['sha256'][:12]}, "
            f"{b['allocator']}" + (f", env {b['env']}" if b.get("env") else "") + ")"
            for label, b in bins.items()) + ".\n")
    cols = ["target", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "RSS MiB",
            "upstream new conns", "reuse %", "errors"]
    for scen, med in R["medians"].items():
        rows = []
        for label, m in med.items():
            rows.append([label, fmt(m["rps"], ".0f"), fmt(m["p50_ms"], ".3f"),
                         fmt(m["p99_ms"], ".3f"), fmt(m["cpu_us_per_req"], ".1f"),
                         fmt(None if m["rss_kb"] is None else m["rss_kb"] / 1024, ".1f"),
                         fmt(m["upstream_new_conns"], ".0f"), fmt(m["reuse_pct"], ".3f"),
                         str(m["errors"])])
        lines.append(f"### {scen}: {SCENARIOS[scen]['desc']}\n")
        lines.append(md_table(cols, rows, "lrrrrrrrr"))
        notes = "; ".join(
            f"{label}: spread req/s {fmt(m['rps_spread_pct'], '.0f')}% / "
            f"CPU µs/req {fmt(m['cpu_spread_pct'], '.0f')}%, "
            f"origin {fmt(m.get('origin_us_per_req'), '.1f')} µs/req, "
            f"proxy core {fmt(m['proxy_core_busy_pct'], '.0f')}% busy, "
            f"client core {fmt(m['client_core_busy_pct'], '.0f')}% busy, "
            f"other processes {fmt(m['other_cpu_pct'], '.0f')}% of a core"
            + (f" ({m['noisy_runs']}/{m['rounds']} runs noisy)" if m["noisy_runs"] else "")
            for label, m in med.items())
        lines.append(f"\n_{notes}_\n")
    if R["idle"]:
        n = a.idle_conns
        lines.append(f"### idle-{n // 1000 if n % 1000 == 0 else n}"
                     f"{'k' if n % 1000 == 0 else ''}: {n} idle keep-alive client "
                     f"connections, each after one served GET /, held {a.idle_hold:g}s\n")
        cols = ["target", "RSS before MiB", "RSS after MiB", "extra RSS MiB", "bytes/conn",
                "established", "still open", "open time s", "upstream new conns", "failures"]
        rows = []
        for r in R["idle"]:
            rows.append([r["target"], f"{r['rss_before_kb'] / 1024:.1f}",
                         f"{r['rss_after_kb'] / 1024:.1f}", f"{r['extra_rss_kb'] / 1024:.1f}",
                         fmt(r["extra_bytes_per_conn"], ".0f"), str(r["established"]),
                         str(r["still_open_after_hold"]), f"{r['open_s']:.1f}",
                         fmt(r["upstream_new_conns"], "d"),
                         ", ".join(f"{k}: {v}" for k, v in r["failures"].items()) or "0"])
        lines.append(md_table(cols, rows, "lrrrrrrrrl") + "\n")
    return "\n".join(lines)


def reprint(path):
    with open(path) as f:
        R = json.load(f)
    st = R["meta"]["settings"]
    a = argparse.Namespace(**{k: st.get(k) for k in (
        "wrk_threads", "connections", "h2_clients", "h2_streams", "duration", "rounds",
        "client_cpu", "proxy_cpu", "idle_conns", "idle_hold")})
    for r in R["runs"]:  # results.json from before this field existed
        if "origin_us_per_req" not in r and r.get("requests"):
            r["origin_us_per_req"] = r["origin_cpu_s"] * 1e6 / r["requests"]
    labels = list(dict.fromkeys(r["target"] for r in R["runs"]))
    R["medians"] = {scen: medians(R["runs"], scen, labels)
                    for scen in dict.fromkeys(r["scenario"] for r in R["runs"])}
    print(report(R, a))
    return 0


# ------------------------------------------------------------------ setup

def tool_version(argv):
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        return r.stdout.decode(errors="replace").strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


def meta(a, workdir):
    def git(*args):
        try:
            return subprocess.run(["git", "-C", REPO, *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL).stdout.decode().strip()
        except OSError:
            return None
    m = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "workdir": workdir,
         "argv": sys.argv, "git_commit": git("rev-parse", "HEAD"),
         "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
         "kernel": os.uname().release, "cpus": os.cpu_count(),
         "nofile_limit": a.nofile, "versions": a.versions,
         "settings": {k: v for k, v in vars(a).items()
                      if k not in ("targets", "versions", "sluice_env_dict")},
         "targets": [{"label": t.label, "kind": t.kind, "binary": t.binary,
                      "env": {**a.sluice_env_dict, **t.env} if t.kind == "sluice" else {}}
                     for t in a.targets]}
    return m


def snapshot_binaries(targets, workdir):
    """Copy every sluice binary into the workdir and run the copies, so that a rebuild of
    target/release/sluice during the benchmark cannot mix two builds in one result."""
    info = {}
    bindir = os.path.join(workdir, "bin")
    os.makedirs(bindir, exist_ok=True)
    for t in targets:
        if t.kind != "sluice":
            continue
        st = os.stat(t.binary)
        with open(t.binary, "rb") as f:
            data = f.read()
        copy = os.path.join(bindir, t.label)
        with open(copy, "wb") as f:
            f.write(data)
        os.chmod(copy, 0o755)
        info[t.label] = {
            "path": t.binary, "copy": copy, "size": st.st_size,
            "mtime": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(st.st_mtime)),
            "sha256": hashlib.sha256(data).hexdigest(),
            # a guess from the symbol table: is the mimalloc feature compiled in?
            "allocator": ("mimalloc" if b"_mi_heap_default_key" in data
                          else "jemalloc" if b"_rjem_" in data else "system (glibc)"),
            "env": {**t.env_all},
        }
        log(f"{t.label}: {t.binary} ({info[t.label]['mtime']}, sha256 "
            f"{info[t.label]['sha256'][:12]}, allocator {info[t.label]['allocator']}) "
            f"-> {copy}")
        t.binary = copy
    return info


def parse_args():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios: " + ", ".join(SCENARIOS) + " (default: all)")
    ap.add_argument("--scenarios", nargs="+", metavar="NAME",
                    help="scenarios to run (space or comma separated, or 'all')")
    ap.add_argument("--duration", type=int, help="seconds per measured run (default 10)")
    ap.add_argument("--rounds", type=int, help="measured rounds per target (default 3)")
    ap.add_argument("--warmup", type=int,
                    help="seconds of unmeasured load per target and scenario (default 2)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: --duration 5 --rounds 1 --warmup 1 unless given")
    ap.add_argument("--connections", type=int, default=50, help="wrk -c (default 50)")
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (default 1)")
    ap.add_argument("--h2-clients", type=int, default=10, help="h2load -c (default 10)")
    ap.add_argument("--h2-streams", type=int, default=10, help="h2load -m (default 10)")
    ap.add_argument("--idle-conns", type=int, default=10000,
                    help="connections for idle-10k (default 10000)")
    ap.add_argument("--idle-hold", type=float, default=2.0,
                    help="seconds to hold them before reading RSS (default 2)")
    ap.add_argument("--idle-timeout", type=float, default=60.0,
                    help="give up opening idle connections after this many s (default 60)")
    ap.add_argument("--build", action="store_true",
                    help="run `cargo build --release -p sluice` first")
    ap.add_argument("--sluice-bin", default=DEFAULT_SLUICE,
                    help="sluice binary (default target/release/sluice)")
    ap.add_argument("--extra-sluice", action="append", default=[], metavar="LABEL=PATH",
                    help="another sluice to compare, e.g. a mimalloc build (repeatable); "
                         "'LABEL=PATH K=V ...' also sets environment variables for this one only")
    ap.add_argument("--sluice-env", action="append", default=[], metavar="K=V",
                    help="environment variable for every sluice process (repeatable)")
    ap.add_argument("--no-nginx", action="store_true", help="do not run the nginx reference")
    ap.add_argument("--nginx-keepalive", type=int, default=64,
                    help="nginx `keepalive` (idle upstream connections cached, default 64; "
                         "below the h2c scenario's concurrency of --h2-clients x --h2-streams "
                         "= 100, so nginx opens upstream connections there)")
    ap.add_argument("--max-noise", type=float, default=25.0, metavar="PCT",
                    help="a run during which other processes (anything but origin, client and "
                         "proxy, seen in /proc/stat) used more than PCT%% of a core is repeated "
                         "(default 25; -1 = off)")
    ap.add_argument("--noise-retries", type=int, default=2,
                    help="repeats of a noisy run before it is kept and flagged (default 2)")
    ap.add_argument("--quiet-wait", type=float, default=20.0, metavar="S",
                    help="before each measured run wait up to S s for the machine to be "
                         "quiet (default 20; 0 = off)")
    ap.add_argument("--client-cpu", default="0",
                    help="CPU list for origin, wrk/h2load and this script (default 0)")
    ap.add_argument("--proxy-cpu", default="1", help="CPU list for the proxies (default 1)")
    ap.add_argument("--origin-port", type=int, default=18080)
    ap.add_argument("--origin-status-port", type=int, default=18081)
    ap.add_argument("--ready-timeout", type=float, default=20.0)
    ap.add_argument("--workdir", help="configs and logs (default: a new /tmp/sluice-bench.*)")
    ap.add_argument("--report", metavar="RESULTS_JSON",
                    help="only print the tables again from an earlier results.json")
    ap.add_argument("--out", default=os.path.join(OUT_DIR, "results.json"),
                    help="raw results (default bench/out/results.json)")
    a = ap.parse_args()

    names = []
    for item in a.scenarios or ["all"]:
        for s in item.split(","):
            s = s.strip()
            if not s:
                continue
            if s == "all":
                names += list(SCENARIOS)
            elif s in SCENARIOS:
                names.append(s)
            else:
                ap.error(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    a.scenarios = list(dict.fromkeys(names))
    a.duration = a.duration if a.duration is not None else (5 if a.quick else 10)
    a.rounds = a.rounds if a.rounds is not None else (1 if a.quick else 3)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.quick else 2)
    if a.duration < 1 or a.rounds < 1 or a.warmup < 0:
        ap.error("--duration and --rounds must be >= 1, --warmup >= 0")
    try:
        a.client_cpus = parse_cpulist(a.client_cpu)
        a.proxy_cpus = parse_cpulist(a.proxy_cpu)
    except ValueError:
        ap.error("--client-cpu / --proxy-cpu take a CPU list such as 0 or 0-3")

    a.sluice_env_dict = {}
    for kv in a.sluice_env:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            ap.error(f"--sluice-env wants K=V, got {kv!r}")
        a.sluice_env_dict[k] = v
    a.sluice_bin = os.path.abspath(a.sluice_bin)
    a.targets = [Target("sluice", "sluice", a.sluice_bin)]
    for spec in a.extra_sluice:
        label, sep, rest = spec.partition("=")
        words = rest.split()
        env = {}
        for kv in words[1:]:
            k, eq, v = kv.partition("=")
            if not eq or not k:
                words = []
                break
            env[k] = v
        if not sep or not re.match(r"^[A-Za-z0-9_.+-]+$", label) or not words:
            ap.error(f"--extra-sluice wants 'LABEL=PATH [K=V ...]' (label: letters, digits, "
                     f"_ . + -), got {spec!r}")
        a.targets.append(Target(label, "sluice", os.path.abspath(words[0]), env))
    if not a.no_nginx:
        a.targets.append(Target("nginx", "nginx"))
    for t in a.targets:
        t.env_all = {**a.sluice_env_dict, **t.env}
    labels = [t.label for t in a.targets]
    if len(set(labels)) != len(labels) or labels.count("nginx") > 1 or "origin" in labels:
        ap.error(f"target labels must be unique (and not 'origin'): {labels}")
    a.out = os.path.abspath(a.out)
    return a


def prepare(a):
    if a.build:
        log("cargo build --release -p sluice")
        r = subprocess.run(["cargo", "build", "--release", "-p", "sluice"], cwd=REPO)
        if r.returncode != 0:
            raise BenchError("cargo build failed")
    need = ["nginx", "taskset"]
    if any(SCENARIOS[s]["kind"] == "wrk" for s in a.scenarios):
        need.append("wrk")
    if "h2c-1k" in a.scenarios:
        need.append("h2load")
    missing = [x for x in need if not shutil.which(x)]
    if missing:
        raise BenchError(f"not found in PATH: {', '.join(missing)} "
                         f"(Debian: apt-get install -y nginx wrk nghttp2-client util-linux)")
    for t in a.targets:
        if t.kind == "sluice" and not os.access(t.binary, os.X_OK):
            raise BenchError(f"sluice binary {t.binary} not found or not executable "
                             f"(build it with `cargo build --release -p sluice` or pass --build)")
    a.versions = {
        "nginx": tool_version(["nginx", "-v"]),
        "wrk": tool_version(["wrk", "-v"]) if shutil.which("wrk") else None,
        "h2load": tool_version(["h2load", "--version"]) if shutil.which("h2load") else None,
        "python": sys.version.split()[0],
    }
    for t in a.targets:
        if t.kind == "sluice":
            a.versions[t.label] = tool_version([t.binary, "--version"])
    for k, v in a.versions.items():
        log(f"{k}: {v}")
    ncpu = os.cpu_count() or 1
    for c in a.client_cpus + a.proxy_cpus:
        if c >= ncpu:
            raise BenchError(f"CPU {c} does not exist (this machine has {ncpu})")
    if set(a.client_cpus) & set(a.proxy_cpus):
        log("warning: client and proxy CPU lists overlap")

    # Many idle connections: raise the open-files limit; children inherit it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    for lim in ((want, max(hard, want)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, lim)
            break
        except (ValueError, OSError):
            continue
    a.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    log(f"RLIMIT_NOFILE {a.nofile}" + (" (could not raise to 65536: hard limit)"
                                      if a.nofile < want else ""))
    if "idle-10k" in a.scenarios and a.nofile < a.idle_conns + 1000:
        raise BenchError(f"RLIMIT_NOFILE {a.nofile} is too low for {a.idle_conns} idle "
                         f"connections; lower --idle-conns")
    # this script (idle-connection client, status polling) runs beside the load generator
    try:
        os.sched_setaffinity(0, set(a.client_cpus))
    except OSError as e:
        log(f"warning: could not pin this script to CPU {a.client_cpu}: {e}")


def main():
    a = parse_args()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if a.report:
        return reprint(a.report)
    bench = None
    try:
        prepare(a)
        bench = Bench(a)
        bench.run()
        return 0
    except BenchError as e:
        print(f"bench/run.py: error: {e}", file=sys.stderr)
        if bench is not None and bench.results["runs"]:
            bench.save()
        return 2
    except KeyboardInterrupt:
        print("bench/run.py: interrupted", file=sys.stderr)
        return 130
    finally:
        if bench is not None:
            # ignore a second Ctrl-C while stopping
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
