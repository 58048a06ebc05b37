#!/usr/bin/env python3
"""Streams 1 GiB down and 1 GiB up through sluice and reports its peak RSS (VmHWM).

Usage: python3 bench/stream.py [--sluice-bin target/release/sluice] [--size-mib 1024]

The origin is a small Python server on loopback: GET /big returns SIZE bytes generated on
the fly, PUT /sink counts the request body and answers with the count. Sluice runs as
`sluice proxy` in front of it; curl is the client (download to /dev/null, upload from a
sparse file). Neither side stores the data, so the numbers show how much the proxy
buffers.
"""
import argparse, os, signal, socket, subprocess, sys, threading, time

CHUNK = b"x" * 65536


def origin(listener, size):
    def handle(conn):
        f = conn.makefile("rb")
        line = f.readline()
        headers = {}
        while True:
            h = f.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        if line.startswith(b"GET"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
            left = size
            while left:
                n = min(left, len(CHUNK))
                conn.sendall(CHUNK[:n])
                left -= n
        else:
            left = int(headers.get("content-length", "0"))
            got = 0
            while left:
                d = f.read(min(left, 1 << 20))
                if not d:
                    break
                got += len(d)
                left -= len(d)
            body = str(got).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        conn.close()

    while True:
        c, _ = listener.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as s:
        for line in s:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice-bin", default="target/release/sluice")
    ap.add_argument("--size-mib", type=int, default=1024)
    a = ap.parse_args()
    size = a.size_mib << 20
    lo = socket.socket()
    lo.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lo.bind(("127.0.0.1", 0))
    lo.listen(16)
    threading.Thread(target=origin, args=(lo, size), daemon=True).start()
    port_sock = socket.socket()
    port_sock.bind(("127.0.0.1", 0))
    port = port_sock.getsockname()[1]
    port_sock.close()
    proxy = subprocess.Popen(
        [a.sluice_bin, "proxy", "--listen", f"127.0.0.1:{port}", "--to", f"http://127.0.0.1:{lo.getsockname()[1]}",
         "--access-log", "off"],
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        base = hwm_kib(proxy.pid)
        t = time.time()
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", f"http://127.0.0.1:{port}/big"],
                             capture_output=True, text=True, check=True).stdout
        down_s = time.time() - t
        assert int(out) == size, out
        down_hwm = hwm_kib(proxy.pid)
        # A sparse file: reading it costs no disk I/O. (curl -T - would send chunked.)
        src = f"/tmp/sluice-stream-{os.getpid()}.bin"
        with open(src, "wb") as f:
            f.truncate(size)
        t = time.time()
        try:
            out = subprocess.run(["curl", "-s", "-T", src, "-H", "Expect:", f"http://127.0.0.1:{port}/sink"],
                                 capture_output=True, text=True, check=True).stdout
        finally:
            os.unlink(src)
        up_s = time.time() - t
        assert int(out) == size, out
        up_hwm = hwm_kib(proxy.pid)
        print(f"| direction | bytes | seconds | MiB/s | sluice peak RSS (VmHWM) |")
        print(f"|---|---:|---:|---:|---:|")
        print(f"| before | - | - | - | {base / 1024:.1f} MiB |")
        print(f"| download | {size} | {down_s:.2f} | {size / down_s / 2**20:.0f} | {down_hwm / 1024:.1f} MiB |")
        print(f"| upload | {size} | {up_s:.2f} | {size / up_s / 2**20:.0f} | {up_hwm / 1024:.1f} MiB |")
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
