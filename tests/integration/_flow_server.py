#!/usr/bin/env python3
"""A FlowService receiver for netbird-ct's tests, built on Python's grpcio and stubs generated
from netbird-ct's FLOW_PROTO at test time (an independent decoder of what netbird-ct sends).

Usage: _flow_server.py STUBS_DIR PORT [CERT_FILE KEY_FILE]

Listens on 127.0.0.1:PORT (0 = any free port; TLS with CERT_FILE/KEY_FILE, else h2c). Like
NetBird's receiver it answers each Events stream with FlowEventAck{isInitiator: true} first and
then, while auto-ack is on, one FlowEventAck{event_id} per received event.

Stdout, one JSON object per line:
  {"type": "listening", "port": N}
  {"type": "stream", "stream": N, "metadata": [[key, value], ...]}
  {"type": "event", "stream": N, "event": {...every field of the FlowEvent...}}
  {"type": "closed", "stream": N}
  {"type": "ok", "cmd": NAME}                 reply to a command, after it took effect
Stdin, one JSON command per line:
  {"cmd": "auto_ack", "on": false}            stop (or resume) acking new events
  {"cmd": "ack", "ids": ["<32 hex>", ...]}    ack these event IDs on every open stream
  {"cmd": "drop"}                             abort every open stream (UNAVAILABLE)
  {"cmd": "stop"}                             stop the server and exit
End of stdin stops the server too.
"""

import json
import queue
import sys
import threading
from concurrent import futures

STUBS, PORT = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, STUBS)

import grpc  # noqa: E402
import flow_pb2  # noqa: E402
import flow_pb2_grpc  # noqa: E402

_out = threading.Lock()


def emit(obj):
    with _out:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def ts(msg, field):
    if not msg.HasField(field):
        return None
    t = getattr(msg, field)
    return [t.seconds, t.nanos]


def event_json(ev):
    out = {
        "event_id": ev.event_id.hex(),
        "timestamp": ts(ev, "timestamp"),
        "public_key": ev.public_key.hex(),
        "is_initiator": ev.isInitiator,
        "window_start": ts(ev, "window_start"),
        "window_end": ts(ev, "window_end"),
        "flow_fields": None,
    }
    if ev.HasField("flow_fields"):
        f = ev.flow_fields
        info = f.WhichOneof("connection_info")
        out["flow_fields"] = {
            "flow_id": f.flow_id.hex(),
            "type": f.type,
            "rule_id": f.rule_id.hex(),
            "direction": f.direction,
            "protocol": f.protocol,
            "source_ip": f.source_ip.hex(),
            "dest_ip": f.dest_ip.hex(),
            "connection_info": info,
            "port_info": None if info != "port_info" else [
                f.port_info.source_port, f.port_info.dest_port],
            "icmp_info": None if info != "icmp_info" else [
                f.icmp_info.icmp_type, f.icmp_info.icmp_code],
            # uint64 as decimal strings: JSON numbers would lose precision above 2^53.
            "rx_packets": str(f.rx_packets),
            "tx_packets": str(f.tx_packets),
            "rx_bytes": str(f.rx_bytes),
            "tx_bytes": str(f.tx_bytes),
            "source_resource_id": f.source_resource_id.decode(),
            "dest_resource_id": f.dest_resource_id.decode(),
            "num_of_starts": str(f.num_of_starts),
            "num_of_ends": str(f.num_of_ends),
            "num_of_drops": str(f.num_of_drops),
        }
    return out


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.auto_ack = True
        self.next_stream = 1
        self.streams = {}  # stream number -> queue of ("ack", bytes) | ("drop", None) | ("end", None)

    def broadcast(self, item):
        with self.lock:
            for q in self.streams.values():
                q.put(item)


STATE = State()


class FlowService(flow_pb2_grpc.FlowServiceServicer):
    def Events(self, request_iterator, context):
        q = queue.Queue()
        with STATE.lock:
            sid = STATE.next_stream
            STATE.next_stream += 1
            STATE.streams[sid] = q
        emit({"type": "stream", "stream": sid,
              "metadata": [[k, v] for k, v in context.invocation_metadata()]})

        def reader():
            try:
                for ev in request_iterator:
                    emit({"type": "event", "stream": sid, "event": event_json(ev)})
                    with STATE.lock:
                        auto = STATE.auto_ack
                    if auto and not ev.isInitiator:
                        q.put(("ack", ev.event_id))
            except Exception:  # the stream was cancelled or aborted
                pass
            finally:
                q.put(("end", None))

        threading.Thread(target=reader, daemon=True).start()
        try:
            yield flow_pb2.FlowEventAck(isInitiator=True)
            while True:
                kind, value = q.get()
                if kind == "ack":
                    yield flow_pb2.FlowEventAck(event_id=value)
                elif kind == "drop":
                    context.abort(grpc.StatusCode.UNAVAILABLE, "stream dropped by the test")
                else:
                    return
        finally:
            with STATE.lock:
                STATE.streams.pop(sid, None)
            emit({"type": "closed", "stream": sid})


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    flow_pb2_grpc.add_FlowServiceServicer_to_server(FlowService(), server)
    address = f"127.0.0.1:{PORT}"
    if len(sys.argv) >= 5:
        with open(sys.argv[3], "rb") as c, open(sys.argv[4], "rb") as k:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        print(f"cannot listen on {address}", file=sys.stderr)
        sys.exit(1)
    server.start()
    emit({"type": "listening", "port": port})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        name = cmd["cmd"]
        if name == "auto_ack":
            with STATE.lock:
                STATE.auto_ack = bool(cmd["on"])
        elif name == "ack":
            for i in cmd["ids"]:
                STATE.broadcast(("ack", bytes.fromhex(i)))
        elif name == "drop":
            STATE.broadcast(("drop", None))
        elif name == "stop":
            break
        else:
            print(f"unknown command {name}", file=sys.stderr)
            continue
        emit({"type": "ok", "cmd": name})
    server.stop(0).wait()
    emit({"type": "ok", "cmd": "stop"})


if __name__ == "__main__":
    main()
