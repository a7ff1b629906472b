#!/usr/bin/env python3
"""A minimal OTLP/HTTP logs and traces receiver for sekisho's tests, decoding with the
OpenTelemetry project's own Python protobuf bindings (the `opentelemetry-proto` package from
PyPI), not with sekisho's code.

    python3 otlp_receiver.py OUT.jsonl [HEAD.json]

Listens on 127.0.0.1 (port 0), prints {"event": "listening", "http": "127.0.0.1:PORT"} on
stdout, and appends one JSON object per received log record to OUT.jsonl: its body, time,
severity, attributes, the resource's attributes and the request's Authorization header.
Spans posted to /v1/traces are appended too, one object each with "signal": "span": the ids
in lower-case hex, name, kind, flags, trace state, status, attributes, events and resource.
With HEAD.json, also keeps there the newest checkpoint line received (the body of a record
with `"type":"checkpoint"`, exactly as sekisho wrote it; replaced atomically): the signed head
that `sekisho audit verify --head HEAD.json` checks a log against, kept off the proxy's host.
Answers 415 to anything but application/x-protobuf and 400 to undecodable bodies, like a
collector.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


HEAD_LOCK = threading.Lock()


def keep_head(body):
    """Writes `body` to the head file when it is a checkpoint newer than the one kept."""
    if len(sys.argv) < 3 or not isinstance(body, str):
        return
    try:
        line = json.loads(body)
    except ValueError:
        return
    if not isinstance(line, dict) or line.get("type") != "checkpoint":
        return
    path = sys.argv[2]
    with HEAD_LOCK:
        try:
            with open(path, encoding="utf-8") as current:
                if json.load(current).get("seq", -1) >= line.get("seq", -1):
                    return
        except (OSError, ValueError):
            pass
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(body + "\n")
        os.replace(tmp, path)


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes_of(attributes):
    return {kv.key: value_of(kv.value) for kv in attributes}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path not in ("/v1/logs", "/v1/traces"):
            self.send_error(404)
            return
        if self.headers.get("Content-Type") != "application/x-protobuf":
            self.send_error(415)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/v1/traces":
            self.traces(body)
            return
        request = logs_service_pb2.ExportLogsServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as error:
            self.send_error(400, str(error))
            return
        with open(sys.argv[1], "a", encoding="utf-8") as out:
            for resource_logs in request.resource_logs:
                resource = {kv.key: value_of(kv.value) for kv in resource_logs.resource.attributes}
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        keep_head(value_of(record.body))
                        out.write(json.dumps({
                            "body": value_of(record.body),
                            "time_unix_nano": record.time_unix_nano,
                            "severity_number": record.severity_number,
                            "severity_text": record.severity_text,
                            "event_name": record.event_name,
                            "attributes": {kv.key: value_of(kv.value) for kv in record.attributes},
                            "resource": resource,
                            "scope": scope_logs.scope.name,
                            "authorization": self.headers.get("Authorization"),
                        }) + "\n")
        self.reply(logs_service_pb2.ExportLogsServiceResponse())

    def traces(self, body):
        request = trace_service_pb2.ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as error:
            self.send_error(400, str(error))
            return
        with open(sys.argv[1], "a", encoding="utf-8") as out:
            for resource_spans in request.resource_spans:
                resource = attributes_of(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        out.write(json.dumps({
                            "signal": "span",
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "trace_state": span.trace_state,
                            "flags": span.flags,
                            "name": span.name,
                            "kind": span.kind,
                            "start_time_unix_nano": span.start_time_unix_nano,
                            "end_time_unix_nano": span.end_time_unix_nano,
                            "status_code": span.status.code,
                            "attributes": attributes_of(span.attributes),
                            "events": [
                                {"name": event.name, "attributes": attributes_of(event.attributes)}
                                for event in span.events
                            ],
                            "resource": resource,
                            "scope": scope_spans.scope.name,
                            "authorization": self.headers.get("Authorization"),
                        }) + "\n")
        self.reply(trace_service_pb2.ExportTraceServiceResponse())

    def reply(self, message):
        """Answers 200 with `message` (an export response) as protobuf."""
        response = message.SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(response)))
        self.end_headers()
        self.wfile.write(response)

    def log_message(self, format, *args):
        sys.stderr.write(format % args + "\n")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    host, port = server.server_address
    print(json.dumps({"event": "listening", "http": f"{host}:{port}"}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
