#!/usr/bin/env python3
"""Memory under a slow-body attack (issue 15, item 11): slowhttptest -B opens N
connections that each send a POST head with a large Content-Length and then trickle the
body (a few bytes every few seconds). Reports the proxy's RSS before, at the peak of the
attack, right after every connection closed, and 20 s later, for sluice (release build)
and for nginx as a reverse proxy (`proxy_request_buffering off`, so that both stream the
body to the origin, and with nginx's default buffering for reference).

The origin is a small asyncio server (this file, `--origin`) that reads each request body
to its end and answers 200, so that the proxy keeps the request in flight for the whole
attack, as an application that reads uploads would.

Needs slowhttptest and nginx (apt-get install -y slowhttptest nginx) and
`cargo build --release`.

    python3 bench/slowbody.py                  # 3,000 connections, 60 s attack
    python3 bench/slowbody.py --connections 500 --duration 20   # smoke test
"""

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as rb  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(sid):
    """VmRSS of every process of the session `sid` (nginx: master and workers), in KiB."""
    return rb.session_mem_kb(sid)[0]


def open_connections(port):
    """Established connections to `port` (the client side of the attack)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True).stdout
    return len(out.splitlines())


async def origin_main(port):
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                chunked = False
                for line in head.split(b"\r\n"):
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                    if k.strip().lower() == b"transfer-encoding":
                        chunked = True
                if chunked:
                    while True:
                        size = int((await reader.readline()).split(b";")[0], 16)
                        await reader.readexactly(size + 2)
                        if size == 0:
                            break
                else:
                    await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def start(argv, logpath):
    return subprocess.Popen(argv, stdout=open(logpath, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def sluice_conf(d, port, origin):
    path = os.path.join(d, "sluice.kdl")
    with open(path, "w") as f:
        f.write(f"""server {{
    access-log "off"
    shutdown-grace "1s"
}}
listener "127.0.0.1:{port}" {{
    max-connections 20000
    body-read-timeout "60s"
}}
upstream "origin" {{
    server "127.0.0.1:{origin}"
    pool max-idle=128
}}
site "*" {{
    route "/" {{ proxy "origin" }}
}}
""")
    return [os.path.join(ROOT, "target/release/sluice"), "run", "--config", path]


def nginx_conf(d, port, origin, buffering):
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(f"""{rb.nginx_common(d, 20000)}events {{ worker_connections 20000; }}
http {{
    access_log off;
{rb.nginx_temp_paths(d)}    client_body_timeout 60s;
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering {"on" if buffering else "off"};
        }}
    }}
}}
""")
    return ["nginx", "-p", d, "-c", path]


def attack(label, argv, port, a, d):
    proxy = start(argv, os.path.join(d, f"{label}.log"))
    try:
        wait_port(port)
        time.sleep(1)
        before = rss_kib(proxy.pid)
        cmd = ["slowhttptest", "-B", "-c", str(a.connections), "-r", str(a.rate), "-i", "5",
               "-s", "1000000", "-x", "10", "-l", str(a.duration), "-t", "POST",
               "-u", f"http://127.0.0.1:{port}/upload", "-p", "5", "-g", "-o", os.path.join(d, label)]
        slow = subprocess.Popen(cmd, stdout=open(os.path.join(d, f"{label}-slow.log"), "wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        peak, peak_conns = before, 0
        while slow.poll() is None:
            time.sleep(1)
            peak = max(peak, rss_kib(proxy.pid))
            peak_conns = max(peak_conns, open_connections(port))
        # Every connection closed: immediately, then after the allocator's decay.
        end = time.time() + 30
        while open_connections(port) and time.time() < end:
            time.sleep(0.5)
        after = rss_kib(proxy.pid)
        time.sleep(20)
        settled = rss_kib(proxy.pid)
        per_conn = (peak - before) / max(peak_conns, 1)
        print(f"| {label} | {peak_conns} | {before / 1024:.1f} | {peak / 1024:.1f} | {per_conn:.1f} | "
              f"{after / 1024:.1f} | {settled / 1024:.1f} |", flush=True)
    finally:
        stop(proxy)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=3000)
    ap.add_argument("--rate", type=int, default=500, help="new connections per second")
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--origin", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--only", choices=["sluice", "nginx"])
    a = ap.parse_args()
    if a.origin:
        asyncio.run(origin_main(a.origin))
        return
    d = tempfile.mkdtemp(prefix="sluice-slowbody-")
    origin_port = free_port()
    origin = start([sys.executable, os.path.abspath(__file__), "--origin", str(origin_port)],
                   os.path.join(d, "origin.log"))
    try:
        wait_port(origin_port)
        print(f"slowhttptest -B -c {a.connections} -r {a.rate} -i 5 -x 10 -l {a.duration}s; RSS in MiB, "
              "per-connection KiB at the peak")
        print("| proxy | connections at peak | before | peak | KiB per connection | all closed | +20 s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        if a.only in (None, "sluice"):
            port = free_port()
            attack("sluice", sluice_conf(d, port, origin_port), port, a, d)
        if a.only in (None, "nginx"):
            for buffering in (False, True):
                port = free_port()
                nd = os.path.join(d, f"nginx-{buffering}")
                os.makedirs(nd, exist_ok=True)
                label = "nginx (request buffering on)" if buffering else "nginx (request buffering off)"
                attack(label, nginx_conf(nd, port, origin_port, buffering), port, a, d)
    finally:
        stop(origin)


if __name__ == "__main__":
    main()
