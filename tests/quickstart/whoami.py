#!/usr/bin/env python3
"""The quickstart's demo upstream: a page showing what sekisho told it about the user.

Listens on 127.0.0.1 (port from argv, default 9091) and renders the identity headers and the
claims of the signed assertion (X-Sekisho-Jwt-Assertion). The assertion's signature is checked
by upstreams with sekisho's JWKS at /.well-known/sekisho/jwks.json; this page only decodes it.
Standard library only.
"""
import base64
import html
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def decode_claims(token):
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return json.loads(base64.urlsafe_b64decode(payload))
    except (IndexError, ValueError):
        return {"error": "not a JWT"}


class Whoami(BaseHTTPRequestHandler):
    def do_GET(self):
        user = self.headers.get("X-Sekisho-User", "(none)")
        email = self.headers.get("X-Sekisho-Email", "(none)")
        groups = self.headers.get("X-Sekisho-Groups", "")
        claims = decode_claims(self.headers.get("X-Sekisho-Jwt-Assertion", ""))
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in self.headers.items()
        )
        body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>whoami</title>
<style>body{{font-family:system-ui,sans-serif;max-width:50rem;margin:2rem auto}}th{{text-align:left;padding-right:1rem}}</style>
</head><body><h1>Hello, {html.escape(user)}</h1>
<p>Email: <b>{html.escape(email)}</b> &middot; Groups: <b>{html.escape(groups or "(none)")}</b></p>
<h2>Signed assertion (claims)</h2><pre>{html.escape(json.dumps(claims, indent=2))}</pre>
<h2>Headers received</h2><table>{rows}</table>
<p><a href="/.sekisho/logout">Sign out</a></p></body></html>"""
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        sys.stderr.write("whoami: " + fmt % args + "\n")


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9091
    ThreadingHTTPServer(("127.0.0.1", port), Whoami).serve_forever()
