#!/usr/bin/env python3
"""A FlowService sender for netbird-ct's receiver tests, built on Python's grpcio and stubs
generated from netbird-ct's FLOW_PROTO at test time (an independent encoder of what
`netbird-ct collect` receives).

Usage: _flow_client.py STUBS_DIR TARGET [--authorization VALUE] [--no-initiator]
                       [--ca-file PEM --server-name NAME]

Opens one Events stream to TARGET (host:port; TLS when --ca-file is given, else h2c), with the
metadata "authorization: VALUE" when given. Like NetBird's flow client it first sends
FlowEvent{isInitiator: true} (unless --no-initiator).

Stdin, one JSON command per line:
  {"cmd": "send", "event": EVENT}     send one FlowEvent (see below)
  {"cmd": "raw", "hex": "..."}        send these bytes as a message (not a valid FlowEvent)
  {"cmd": "close"}                    half-close the stream (end of stdin does the same)
Stdout, one JSON object per line:
  {"type": "sent", "n": N}            after the N-th message was handed to gRPC
  {"type": "ack", "event_id": HEX, "is_initiator": BOOL}
  {"type": "status", "code": N, "details": "..."}   when the stream ended (0 = OK)

EVENT: {"event_id": HEX, "timestamp": [SECONDS, NANOS] | null, "public_key": HEX,
        "is_initiator": BOOL, "window_start": [S, N] | null, "window_end": [S, N] | null,
        "flow_fields": null | {"flow_id": HEX, "type": N, "rule_id": HEX, "direction": N,
          "protocol": N, "source_ip": IP, "dest_ip": IP, "port_info": [SRC, DST] | null,
          "icmp_info": [TYPE, CODE] | null, "rx_packets": "N", "tx_packets": "N",
          "rx_bytes": "N", "tx_bytes": "N", "source_resource_id": HEX, "dest_resource_id": HEX,
          "num_of_starts": "N", "num_of_ends": "N", "num_of_drops": "N"}}
IP is address text ("fd00::1" becomes 16 bytes, "100.64.0.1" 4), "" for none, or "hex:..." for
raw bytes. uint64 values are decimal strings. Missing keys are left unset.
"""

import ipaddress
import json
import queue
import sys
import threading

STUBS, TARGET = sys.argv[1], sys.argv[2]
sys.path.insert(0, STUBS)

import grpc  # noqa: E402
import flow_pb2  # noqa: E402
import flow_pb2_grpc  # noqa: E402

_out = threading.Lock()


def emit(obj):
    with _out:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def option(name, default=None):
    args = sys.argv[3:]
    return args[args.index(name) + 1] if name in args else default


def ip_bytes(text):
    if text.startswith("hex:"):
        return bytes.fromhex(text[4:])
    return b"" if text == "" else ipaddress.ip_address(text).packed


def set_ts(msg, field, value):
    if value is not None:
        t = getattr(msg, field)
        t.seconds, t.nanos = value[0], value[1]


def build_event(e):
    ev = flow_pb2.FlowEvent()
    ev.event_id = bytes.fromhex(e.get("event_id", ""))
    set_ts(ev, "timestamp", e.get("timestamp"))
    ev.public_key = bytes.fromhex(e.get("public_key", ""))
    ev.isInitiator = e.get("is_initiator", False)
    set_ts(ev, "window_start", e.get("window_start"))
    set_ts(ev, "window_end", e.get("window_end"))
    f = e.get("flow_fields")
    if f is not None:
        ff = ev.flow_fields
        ff.SetInParent()
        for key in ("flow_id", "rule_id", "source_resource_id", "dest_resource_id"):
            if key in f:
                setattr(ff, key, bytes.fromhex(f[key]))
        for key in ("type", "direction", "protocol"):
            if key in f:
                setattr(ff, key, f[key])
        for key in ("source_ip", "dest_ip"):
            if key in f:
                setattr(ff, key, ip_bytes(f[key]))
        if f.get("port_info") is not None:
            ff.port_info.source_port, ff.port_info.dest_port = f["port_info"]
        if f.get("icmp_info") is not None:
            ff.icmp_info.icmp_type, ff.icmp_info.icmp_code = f["icmp_info"]
        for key in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes",
                    "num_of_starts", "num_of_ends", "num_of_drops"):
            if key in f:
                setattr(ff, key, int(f[key]))
    return ev


class Raw:
    """A message that is already bytes (sent with an identity serializer)."""

    def __init__(self, data):
        self.data = data


def main():
    ca = option("--ca-file")
    if ca is None:
        channel = grpc.insecure_channel(TARGET)
    else:
        with open(ca, "rb") as fh:
            creds = grpc.ssl_channel_credentials(root_certificates=fh.read())
        name = option("--server-name", "localhost")
        channel = grpc.secure_channel(
            TARGET, creds, options=[("grpc.ssl_target_name_override", name)])
    # Raw bytes in, so that invalid messages can be sent too; acks decoded here.
    events = channel.stream_stream(
        "/flow.FlowService/Events",
        request_serializer=lambda m: m.data,
        response_deserializer=flow_pb2.FlowEventAck.FromString,
    )
    outgoing = queue.Queue()
    if "--no-initiator" not in sys.argv:
        outgoing.put(Raw(flow_pb2.FlowEvent(isInitiator=True).SerializeToString()))
    sent = [0]

    def requests():
        while True:
            item = outgoing.get()
            if item is None:
                return
            yield item
            sent[0] += 1
            emit({"type": "sent", "n": sent[0]})

    def read_stdin():
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            cmd = json.loads(line)
            if cmd["cmd"] == "send":
                outgoing.put(Raw(build_event(cmd["event"]).SerializeToString()))
            elif cmd["cmd"] == "raw":
                outgoing.put(Raw(bytes.fromhex(cmd["hex"])))
            elif cmd["cmd"] == "close":
                break
        outgoing.put(None)

    threading.Thread(target=read_stdin, daemon=True).start()
    metadata = []
    auth = option("--authorization")
    if auth is not None:
        metadata.append(("authorization", auth))
    try:
        for ack in events(requests(), metadata=metadata):
            emit({"type": "ack", "event_id": ack.event_id.hex(), "is_initiator": ack.isInitiator})
        emit({"type": "status", "code": 0, "details": ""})
    except grpc.RpcError as err:
        emit({"type": "status", "code": err.code().value[0], "details": err.details() or ""})
    channel.close()


if __name__ == "__main__":
    main()
