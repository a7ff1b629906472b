#!/usr/bin/env python3
"""Helpers for tests/bench/run.sh (Python standard library only).

Subcommands:
  free-port                      print a TCP port the kernel just handed out on 127.0.0.1 (racy, see run.sh)
  cpu PID...                     print utime+stime and stime (kernel), in clock ticks, of PIDs and
                                 all their descendants, as "TOTAL:KERNEL"
  json-get FILE KEY              print one top-level key of the first JSON line of FILE
  cookie JAR PREFIX...           print a Cookie header value with the jar's cookies named PREFIX*
  refresh-cookie HEADERS COOKIE  print COOKIE updated by the Set-Cookie lines of a response's HEADERS
  check-identity BODY JWKS       check what the upstream received (identity headers, signed assertion)
  record OUT ROUND TARGET WRK_OUT CPU0 CPU1 UP0 UP1
                                 turn one wrk run (+ CPU readings) into one JSON line appended to OUT
  report RESULTS CLK_TCK         print the per-round numbers, the median table and the ratio
  idle PIDS URL N h1|h2 [COOKIE [METRICS_URL]]
                                 open N keep-alive connections with one request each; print the
                                 RSS growth of PIDS (comma-separated) per connection as JSON, with
                                 sekisho's connection gauges when METRICS_URL is given
  handshakes PIDS HOST PORT N full|resumed CLK_TCK
                                 N TLS handshakes; print the server's CPU per handshake as JSON
"""

import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    print(port)


def _children(pid):
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(k) for k in f.read().split())
    except FileNotFoundError:
        return []
    except OSError:
        # Kernels without CONFIG_PROC_CHILDREN: scan /proc for the parent pid.
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if _stat_fields(int(entry))[1] == pid:
                        kids.append(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
    return kids


def _stat_fields(pid):
    """Fields of /proc/PID/stat after the command name: [state, ppid, ...] (field 3 onwards)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    rest = text[text.rindex(")") + 2:].split()
    return [rest[0], int(rest[1])] + rest[2:]


def cpu_ticks(pid):
    """utime + stime (fields 14 and 15 of /proc/PID/stat) of one process, all its threads."""
    fields = _stat_fields(pid)
    # fields[0] is field 3 (state), so field N is fields[N - 3].
    return int(fields[14 - 3]) + int(fields[15 - 3])


def _tree_sum(pids, measure):
    """The sum of measure(pid) over PIDS and all their descendants (processes gone meanwhile and
    unreadable ones count 0)."""
    seen, todo, total = set(), [int(p) for p in pids], 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            total += measure(pid)
        except (OSError, ValueError):
            continue
        todo.extend(_children(pid))
    return total


def kernel_ticks(pid):
    """stime (field 15 of /proc/PID/stat) of one process, all its threads."""
    return int(_stat_fields(pid)[15 - 3])


def cpu(pids):
    print(f"{_tree_sum(pids, cpu_ticks)}:{_tree_sum(pids, kernel_ticks)}")


def _ticks(text):
    """(total, kernel) from `cpu`'s "TOTAL:KERNEL"."""
    total, _, kernel = text.partition(":")
    return int(total), int(kernel or 0)


def json_get(path, key):
    with open(path) as f:
        line = f.readline()
    value = json.loads(line)[key]
    print(value if value is not None else "")


def cookie(jar, *prefixes):
    pairs = []
    with open(jar) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#HttpOnly_"):
                line = line[len("#HttpOnly_"):]
            elif not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) >= 7 and parts[5].startswith(tuple(prefixes)) and parts[6]:
                pairs.append(f"{parts[5]}={parts[6]}")
    if not pairs:
        sys.exit(f"no cookie named {' or '.join(prefixes)}* in {jar}")
    print("; ".join(pairs))


def refresh_cookie(headers_path, cookie_header):
    """What a browser would send next: COOKIE with the response's Set-Cookie values applied."""
    jar = dict(p.split("=", 1) for p in cookie_header.split("; ") if "=" in p)
    with open(headers_path, errors="replace") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name.strip().lower() != "set-cookie":
                continue
            attrs = [a.strip() for a in value.strip().split(";")]
            cname, _, cvalue = attrs[0].partition("=")
            if not cvalue or any(a.lower() == "max-age=0" for a in attrs[1:]):
                jar.pop(cname, None)
            else:
                jar[cname] = cvalue
    if not jar:
        sys.exit("the response deleted every cookie")
    print("; ".join(f"{k}={v}" for k, v in jar.items()))


def _b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _der_int(raw):
    raw = raw.lstrip(b"\x00") or b"\x00"
    if raw[0] & 0x80:
        raw = b"\x00" + raw
    return b"\x02" + bytes([len(raw)]) + raw


def check_identity(body_path, jwks_path):
    """The upstream's /.bench/identity answers `name=value` lines with what it received."""
    with open(body_path) as f:
        seen = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
    expect = {"user": "alice", "email": "alice@example.com", "groups": "eng,admins"}
    for key, want in expect.items():
        if seen.get(key) != want:
            sys.exit(f"upstream received {key}={seen.get(key)!r}, expected {want!r}")
    if "_sekisho" in seen.get("cookie", ""):
        sys.exit(f"the session cookie leaked to the upstream: {seen['cookie']!r}")
    token = seen.get("assertion", "")
    if token.count(".") != 2:
        sys.exit(f"no signed assertion reached the upstream: {token!r}")
    head_b64, claims_b64, sig_b64 = token.split(".")
    header, claims = json.loads(_b64url(head_b64)), json.loads(_b64url(claims_b64))
    if header.get("alg") != "ES256":
        sys.exit(f"assertion alg {header.get('alg')!r}, expected ES256")
    if claims.get("sub") != "alice" or claims.get("aud") not in ("app", ["app"]) or claims.get("exp", 0) <= time.time():
        sys.exit(f"unexpected assertion claims {claims}")
    with open(jwks_path) as f:
        keys = json.load(f)["keys"]
    key = next((k for k in keys if k.get("kid") == header.get("kid")), keys[0] if len(keys) == 1 else None)
    if key is None or key.get("crv") != "P-256":
        sys.exit(f"no P-256 key for kid {header.get('kid')!r} in the proxy's JWKS")
    # SubjectPublicKeyInfo of a P-256 point, so that openssl can verify the signature.
    spki = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200") + b"\x04" + _b64url(key["x"]) + _b64url(key["y"])
    sig = _b64url(sig_b64)
    der_sig = _der_int(sig[:32]) + _der_int(sig[32:])
    der_sig = b"\x30" + bytes([len(der_sig)]) + der_sig
    with tempfile.TemporaryDirectory() as d:
        pem = "-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(spki).decode() + "\n-----END PUBLIC KEY-----\n"
        for name, data in (("pub.pem", pem.encode()), ("sig.der", der_sig), ("data", f"{head_b64}.{claims_b64}".encode())):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        result = subprocess.run(
            ["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.der", "data"],
            cwd=d, capture_output=True, text=True,
        )
    if result.returncode != 0:
        sys.exit(f"the assertion's signature does not verify with the proxy's JWKS: {result.stdout}{result.stderr}")
    print(f"upstream received user=alice email=alice@example.com groups=eng,admins, no session cookie, "
          f"and an ES256 assertion (sub={claims['sub']}, aud={claims['aud']}) that verifies with the proxy's JWKS")


def record(out, round_, target, wrk_out, cpu0, cpu1, up0, up1):
    stats = None
    with open(wrk_out) as f:
        for line in f:
            if line.startswith("BENCH "):
                stats = json.loads(line[len("BENCH "):])
    if stats is None:
        sys.exit(f"no BENCH line in wrk output {wrk_out}")
    (c0, k0), (c1, k1) = _ticks(cpu0), _ticks(cpu1)
    stats.update(round=int(round_), target=target, cpu_ticks=c1 - c0, kernel_ticks=k1 - k0,
                 upstream_ticks=_ticks(up1)[0] - _ticks(up0)[0])
    with open(out, "a") as f:
        f.write(json.dumps(stats) + "\n")
    return stats


def _derive(r, tick):
    n = max(r["requests"], 1)
    secs = r["duration_us"] / 1e6
    errors = sum(r[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeout_errors"))
    return {
        "rps": r["requests"] / secs,
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "cpu_us": r["cpu_ticks"] * tick * 1e6 / n,
        "kernel_us": r.get("kernel_ticks", 0) * tick * 1e6 / n,
        "up_us": r["upstream_ticks"] * tick * 1e6 / n,
        "cores": r["cpu_ticks"] * tick / secs,
        "errors": errors,
        "bytes": r["bytes"] / n,
    }


LABELS = {"direct": "direct (upstream)", "nginx": "nginx proxy", "floor": "bare hyper proxy",
          "sekisho": "sekisho (auth'd)",
          "strict": "sekisho, strict audit", "base": "base sekisho", "nginx-tls": "nginx, TLS",
          "sekisho-tls": "sekisho, TLS", "base-tls": "base sekisho, TLS"}
ORDER = ["direct", "nginx", "floor", "sekisho", "strict", "base", "nginx-tls", "sekisho-tls", "base-tls"]
# The CPU target of issue 14: sekisho per authenticated request ≤ 1.3 × nginx's plain proxying.
TARGET_RATIO = 1.3


def report(results, clk_tck, idle_path=None, hs_path=None):
    tick = 1.0 / int(clk_tck)
    runs = [json.loads(line) for line in open(results) if line.strip()]
    print()
    print("per-round raw numbers (CPU = the process(es) under test; for direct, the upstream itself)")
    print(f"{'round':>5}  {'target':<22} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'CPU µs/req':>10} {'kernel µs':>9} {'upstr µs/req':>12} {'cores used':>10} {'B/resp':>6} {'errors':>6}")
    for r in runs:
        d = _derive(r, tick)
        print(f"{r['round']:>5}  {LABELS[r['target']]:<22} {r['requests']:>9} {d['rps']:>9.0f} {d['p50_ms']:>8.3f} "
              f"{d['p99_ms']:>8.3f} {d['cpu_us']:>10.1f} {d['kernel_us']:>9.1f} {d['up_us']:>12.1f} {d['cores']:>10.2f} {d['bytes']:>6.0f} {d['errors']:>6}")
    print()
    medians = {}
    print("median over rounds")
    print(f"{'target':<22} {'rounds':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>10} {'kernel µs':>9} {'upstr µs/req':>12}")
    for target in ORDER:
        rows = [_derive(r, tick) for r in runs if r["target"] == target]
        if not rows:
            continue
        m = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        medians[target] = m
        print(f"{LABELS[target]:<22} {len(rows):>6} {m['rps']:>9.0f} {m['p50_ms']:>8.3f} {m['p99_ms']:>8.3f} "
              f"{m['cpu_us']:>10.1f} {m['kernel_us']:>9.1f} {m['up_us']:>12.1f}")
    print()
    if "sekisho" in medians and "strict" in medians:
        s, t = medians["sekisho"], medians["strict"]
        print(f"audit durability strict vs batched: p50 {t['p50_ms']:.3f} vs {s['p50_ms']:.3f} ms, "
              f"p99 {t['p99_ms']:.3f} vs {s['p99_ms']:.3f} ms (added p99 {t['p99_ms'] - s['p99_ms']:+.3f} ms), "
              f"CPU {t['cpu_us']:.1f} vs {s['cpu_us']:.1f} µs/request")
    for ours, theirs in (("sekisho", "nginx"), ("strict", "nginx"), ("base", "nginx"),
                         ("sekisho-tls", "nginx-tls"), ("base-tls", "nginx-tls")):
        if ours in medians and theirs in medians and medians[theirs]["cpu_us"] > 0:
            ratio = medians[ours]["cpu_us"] / medians[theirs]["cpu_us"]
            verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
            print(f"{LABELS[ours]} ÷ {LABELS[theirs]}, CPU per request: {medians[ours]['cpu_us']:.1f} / "
                  f"{medians[theirs]['cpu_us']:.1f} = {ratio:.2f}  → {verdict} the ≤ {TARGET_RATIO} target")
    if "floor" in medians and "nginx" in medians and medians["nginx"]["cpu_us"] > 0:
        f, n, s = medians["floor"], medians["nginx"], medians.get("sekisho")
        print(f"{LABELS['floor']} ÷ {LABELS['nginx']}, CPU per request: {f['cpu_us']:.1f} / {n['cpu_us']:.1f} = "
              f"{f['cpu_us'] / n['cpu_us']:.2f} (the runtime, server, client and pool alone)")
        if s:
            print(f"{LABELS['sekisho']} − {LABELS['floor']}: {s['cpu_us'] - f['cpu_us']:.1f} µs per request "
                  f"({s['kernel_us'] - f['kernel_us']:.1f} of it kernel): what sekisho's own work costs")
    for new, old in (("sekisho", "base"), ("sekisho-tls", "base-tls")):
        if new in medians and old in medians and medians[old]["cpu_us"] > 0:
            print(f"{LABELS[new]} ÷ {LABELS[old]}, CPU per request: {medians[new]['cpu_us']:.1f} / "
                  f"{medians[old]['cpu_us']:.1f} = {medians[new]['cpu_us'] / medians[old]['cpu_us']:.2f}; "
                  f"p99 {medians[new]['p99_ms']:.3f} vs {medians[old]['p99_ms']:.3f} ms")
    if idle_path and os.path.exists(idle_path) and os.path.getsize(idle_path):
        print()
        print("idle keep-alive client connections (one request each, then left open): RSS growth")
        print(f"{'target':<22} {'proto':>6} {'connections':>11} {'RSS before MiB':>14} {'RSS after MiB':>13} {'KiB/conn':>9}")
        for line in open(idle_path):
            r = json.loads(line)
            print(f"{LABELS[r['target']]:<22} {r['proto']:>6} {r['connections']:>11} {r['rss_before_kib'] / 1024:>14.1f} "
                  f"{r['rss_after_kib'] / 1024:>13.1f} {r['kib_per_connection']:>9.2f}")
    if hs_path and os.path.exists(hs_path) and os.path.getsize(hs_path):
        print()
        print("TLS handshakes (new connection, handshake, close; median of rounds): server CPU per handshake")
        rows = [json.loads(line) for line in open(hs_path)]
        print(f"{'target':<22} {'mode':>8} {'handshakes':>10} {'resumed':>8} {'CPU µs/hs':>10} {'per s':>7}  cipher")
        for target in ORDER:
            for mode in ("full", "resumed"):
                sel = [r for r in rows if r["target"] == target and r["mode"] == mode]
                if not sel:
                    continue
                cpu = statistics.median(r["server_cpu_us_per_handshake"] for r in sel)
                rate = statistics.median(r["per_second"] for r in sel)
                resumed = min(r["resumed"] for r in sel)
                print(f"{LABELS[target]:<22} {mode:>8} {sel[0]['handshakes']:>10} {resumed:>8} {cpu:>10.1f} {rate:>7.0f}  {sel[0]['cipher']}")
    bad = [r for r in runs if _derive(r, tick)["errors"]]
    if bad:
        print(f"INVALID: {len(bad)} run(s) had errors or non-2xx/3xx answers (see the errors column); "
              f"their numbers do not measure proxied requests")
        sys.exit(3)


def _vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _rss_kib(pids):
    """VmRSS of PIDs and their descendants, in KiB."""
    return _tree_sum(pids, _vm_rss_kib)


def _h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _hpack_literal(name, value, indexed=False):
    """A literal header field, no Huffman: without indexing (RFC 7541 §6.2.2), or with incremental
    indexing (§6.2.1: the server keeps it in its HPACK table for the connection's life, as browsers
    ask for their cookie, user agent and authority)."""
    name, value = name.encode(), value.encode()
    def string(b):
        if len(b) < 127:
            return bytes([len(b)]) + b
        # 7-bit prefix integer continuation (RFC 7541 §5.1)
        n, out = len(b) - 127, bytearray([127])
        while n >= 128:
            out.append((n % 128) + 128)
            n //= 128
        out.append(n)
        return bytes(out) + b
    return (b"\x40" if indexed else b"\x00") + string(name) + string(value)


def _recv_h1(sock):
    """Reads one HTTP/1.1 response (Content-Length or chunked with a small body); returns the status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("connection closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("connection closed inside a chunked body")
            body += chunk
    elif length is not None:
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("connection closed inside the body")
            body += chunk
    return status


def _recv_h2_response(sock):
    """Reads frames until stream 1 ends; acknowledges the server's SETTINGS; returns :status."""
    buf, status, acked = b"", None, False
    while True:
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("connection closed before the HTTP/2 response ended")
            buf += chunk
        length = int.from_bytes(buf[:3], "big")
        kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        payload, buf = buf[9:9 + length], buf[9 + length:]
        if kind == 4 and not flags & 1 and not acked:  # SETTINGS, not an ACK
            sock.sendall(_h2_frame(4, 1, 0))
            acked = True
        elif kind == 7:  # GOAWAY
            raise OSError(f"GOAWAY from the server: {payload[8:]!r}")
        elif kind == 1 and stream == 1 and status is None:  # HEADERS: first byte of :status
            # The server's first field is :status, indexed (0x88 = 200) or a literal.
            status = {0x88: 200, 0x89: 204, 0x8a: 206, 0x8b: 304, 0x8c: 400, 0x8d: 404, 0x8e: 500}.get(payload[0], -1)
        if stream == 1 and flags & 1 and kind in (0, 1):  # END_STREAM on DATA or HEADERS
            return status


def _gauges(metrics_url):
    """sekisho's connection gauges from its admin /metrics."""
    import urllib.request
    out = {}
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            for name in ("sekisho_connections_open", "sekisho_connections_parked"):
                if line.startswith(name + " "):
                    out[name[len("sekisho_"):]] = int(line.split()[1])
    return out


def idle(pid_text, url, count, proto, cookie="", metrics_url=""):
    """Opens COUNT connections to URL (http://host:port/path), makes one request on each (HTTP/1.1
    keep-alive, or HTTP/2 with prior knowledge), keeps them all open, and prints one JSON line with
    the server's RSS growth per connection. PID may be a comma-separated list (e.g. nginx master)."""
    import resource
    from urllib.parse import urlsplit
    count = int(count)
    pids = [int(p) for p in pid_text.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1000), hard))
    u = urlsplit(url)
    host, port, path = u.hostname, u.port, u.path or "/"
    extra = [("cookie", cookie)] if cookie else []
    if proto == "h1":
        lines = [f"GET {path} HTTP/1.1", f"Host: {u.netloc}"] + [f"{k}: {v}" for k, v in extra]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    else:
        # Indexed, like a browser's: what the server keeps of them is part of an idle connection.
        block = b"".join(_hpack_literal(k, v, indexed=True) for k, v in
                         [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", u.netloc)] + extra)
        request = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0)
                   + _h2_frame(1, 0x4 | 0x1, 1, block))  # HEADERS, END_HEADERS | END_STREAM
    # Warm the server up with a few connections first (allocator arenas, caches), then measure.
    def one():
        s = socket.create_connection((host, port))
        s.sendall(request)
        status = _recv_h1(s) if proto == "h1" else _recv_h2_response(s)
        if status != 200:
            raise SystemExit(f"{url}: status {status} ({proto})")
        return s
    warm = [one() for _ in range(50)]
    for s in warm:
        s.close()
    time.sleep(0.5)  # let the server notice the closes (this is a measurement, not a test)
    before = _rss_kib(pids)
    conns = []
    t0 = time.monotonic()
    for _ in range(count):
        conns.append(one())
    # Idle: the requests are over. Let the server settle (sekisho parks an idle HTTP/1.1
    # connection after a quiet second and hands the freed pages back to the system): sample the
    # RSS every half second until it stops falling, at most 15 s.
    after, samples = _rss_kib(pids), 0
    while samples < 30:
        time.sleep(0.5)
        samples += 1
        now = _rss_kib(pids)
        if now >= after and samples >= 6:
            break
        after = min(after, now)
    elapsed = time.monotonic() - t0
    gauges = _gauges(metrics_url) if metrics_url else {}
    for s in conns:
        s.close()
    print(json.dumps({"proto": proto, "connections": count, "rss_before_kib": before, "rss_after_kib": after,
                      "kib_per_connection": (after - before) / count, "seconds": round(elapsed, 1), **gauges}))


def handshakes(pid_text, host, port, count, mode, clk_tck):
    """COUNT TLS handshakes (then close) to HOST:PORT; mode `full` (no resumption) or `resumed`
    (offering a ticket from a first connection). Prints JSON: the server's CPU per handshake and how
    many were actually resumed."""
    import ssl
    count, tick = int(count), 1.0 / int(clk_tck)
    pids = [int(p) for p in pid_text.split(",")]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    session = None
    if mode == "resumed":
        with socket.create_connection((host, int(port))) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                while s.recv(65536):
                    pass  # the TLS 1.3 ticket arrives after the handshake; read to the end
                session = s.session
    def ticks():
        return _tree_sum(pids, cpu_ticks)
    c0, t0, reused, suite = ticks(), time.monotonic(), 0, None
    for _ in range(count):
        with socket.create_connection((host, int(port))) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
                reused += 1 if s.session_reused else 0
                suite = s.cipher()[0]
    c1, elapsed = ticks(), time.monotonic() - t0
    print(json.dumps({"mode": mode, "handshakes": count, "resumed": reused, "cipher": suite,
                      "server_cpu_us_per_handshake": (c1 - c0) * tick * 1e6 / count,
                      "per_second": count / elapsed}))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "free-port":
        free_port()
    elif cmd == "cpu":
        cpu(args)
    elif cmd == "json-get":
        json_get(*args)
    elif cmd == "cookie":
        cookie(*args)
    elif cmd == "refresh-cookie":
        refresh_cookie(*args)
    elif cmd == "check-identity":
        check_identity(*args)
    elif cmd == "record":
        record(*args)
    elif cmd == "report":
        report(*args)
    elif cmd == "idle":
        idle(*args)
    elif cmd == "handshakes":
        handshakes(*args)
    else:
        sys.exit(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main()
