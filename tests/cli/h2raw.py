"""A raw HTTP/2 client (Debian's python3-h2 and python3-hpack) for tests that must behave the way
no well-behaved gRPC library would: half-sent requests, resets in a loop, silent connections.
Loopback only; every read has a timeout."""
import socket
import struct
import time

import h2.config
import h2.connection
import h2.events


def grpc_frame(payload, declared=None):
    """A gRPC message: flag byte, 4-byte big-endian length (`declared`, default the real one), payload."""
    return struct.pack(">BI", 0, len(payload) if declared is None else declared) + payload


class H2Client:
    """One HTTP/2 connection to host:port (or a socket already connected)."""

    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.closed = False
        self.conn.initiate_connection()
        self.flush()
        self.authority = f"{host}:{port}"
        self.responses = {}  # stream id -> dict(headers=[...], data=b"", ended=bool)

    def flush(self):
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except OSError:  # the server closed the connection
                self.closed = True

    def headers(self, path):
        return [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", self.authority),
                ("content-type", "application/grpc"), ("te", "trailers")]

    def start_call(self, path, end_stream=False, extra_headers=()):
        """Opens a stream with a gRPC request's headers; returns its id (not flushed)."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, self.headers(path) + list(extra_headers), end_stream=end_stream)
        self.responses[sid] = {"headers": [], "data": b"", "ended": False}
        return sid

    def call(self, path, payload=b"", timeout=5, extra_headers=()):
        """A whole unary call; returns (grpc-status as int or None, response bytes)."""
        sid = self.start_call(path, extra_headers=extra_headers)
        self.conn.send_data(sid, grpc_frame(payload), end_stream=True)
        self.flush()
        self.pump_until(lambda: self.responses[sid]["ended"], timeout)
        r = self.responses[sid]
        return self.status(sid), r["data"]

    def status(self, sid):
        for k, v in self.responses[sid]["headers"]:
            if k == "grpc-status":
                return int(v)
        return None

    def pump(self, timeout):
        """Reads once (up to `timeout` s) and handles the events; False once the server closed."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, BlockingIOError):
            return True
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        for ev in self.conn.receive_data(data):
            r = self.responses.get(getattr(ev, "stream_id", 0))
            if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)) and r is not None:
                r["headers"] += list(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                if r is not None:
                    r["data"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and r is not None:
                r["ended"] = True
        self.flush()
        return not self.closed

    def pump_until(self, done, timeout):
        """Pumps until done() or the server closed; raises TimeoutError after `timeout` s."""
        end = time.monotonic() + timeout
        while not done():
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer in time")
            if not self.pump(min(left, 0.5)):
                return

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def rss_kib(pid, field="VmRSS"):
    """A /proc/PID/status memory field in KiB (VmRSS now, VmHWM the peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rapid_reset_burst(authority, path, first_stream_id, count):
    """`count` HEADERS-then-RST_STREAM pairs as raw bytes (stream ids from first_stream_id, odd),
    built without h2's state machine, which is far too slow to flood with."""
    import hpack
    block = hpack.Encoder().encode([(":method", "POST", True), (":scheme", "http", True), (":path", path, True),
                                    (":authority", authority, True), ("content-type", "application/grpc", True),
                                    ("te", "trailers", True)])
    out = bytearray()
    sid = first_stream_id
    for _ in range(count):
        out += struct.pack(">I", len(block))[1:] + struct.pack(">BBI", 1, 0x4, sid) + block
        out += struct.pack(">I", 4)[1:] + struct.pack(">BBI", 3, 0, sid) + struct.pack(">I", 8)
        sid += 2
    return bytes(out), sid


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def raw_frame(ftype, flags, stream_id, payload=b""):
    """One HTTP/2 frame as bytes (RFC 9113, section 4.1)."""
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, stream_id) + payload


def request_block(authority, path="/idgen.IdGen/Gen"):
    import hpack
    return hpack.Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", path),
                                   (":authority", authority), ("content-type", "application/grpc"),
                                   ("te", "trailers")])


def flood(kind, authority):
    """Yields the bytes of an abusive client, chunk after chunk, without end (the caller stops it):
    no_ack (streams opened without ever acknowledging the server's SETTINGS), header_block (one
    header block of a 1 GiB value, in CONTINUATION frames), window_update, empty_data,
    empty_continuation (frames that carry nothing, as fast as the socket takes them)."""
    settings, ack = raw_frame(4, 0, 0), raw_frame(4, 1, 0)
    block = request_block(authority)
    if kind == "no_ack":
        yield PREFACE + settings
        sid = 1
        while True:
            chunk = b"".join(raw_frame(1, 0x4 | 0x1, sid + 2 * k, block) for k in range(500))
            sid += 1000
            yield chunk
    yield PREFACE + settings + ack
    if kind == "header_block":
        # A literal header "x" whose value is declared 1 GiB long (HPACK integer, 7-bit prefix).
        n, value_len = (1 << 30) - 127, bytearray([0x7f])
        while n >= 128:
            value_len.append((n & 0x7f) | 0x80)
            n >>= 7
        value_len.append(n)
        yield raw_frame(1, 0, 1, block + b"\x00\x01x" + bytes(value_len))
        chunk = raw_frame(9, 0, 1, b"a" * 16384) * 16
    elif kind == "window_update":
        chunk = raw_frame(8, 0, 0, struct.pack(">I", 1)) * 2000
    elif kind == "empty_data":
        yield raw_frame(1, 0x4, 1, block)
        chunk = raw_frame(0, 0, 1) * 2000
    elif kind == "empty_continuation":
        yield raw_frame(1, 0, 1, block[:3])
        chunk = raw_frame(9, 0, 1) * 2000
    else:
        raise ValueError(kind)
    while True:
        yield chunk


def ping_answered(sock, payload=b"zaptid!!"):
    """Reads frames from `sock` until the server answers the PING `payload` (True) or closes the
    connection (False)."""
    buf = b""
    try:
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return False
            buf += chunk
            while len(buf) >= 9:
                length = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + length:
                    break
                ftype, flags, body = buf[3], buf[4], buf[9:9 + length]
                buf = buf[9 + length:]
                if ftype == 6 and flags & 1 and body == payload:
                    return True
    except OSError:
        return False


def abuse(port, chunks, end, connections_made=None):
    """Sends what `chunks()` yields to 127.0.0.1:port until the monotonic time `end`, connecting
    again whenever the server closes the connection; counts connections in connections_made[0]."""
    import time
    while time.monotonic() < end:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            continue
        if connections_made is not None:
            connections_made[0] += 1
        try:
            for chunk in chunks():
                if time.monotonic() >= end:
                    break
                sock.sendall(chunk)
        except OSError:
            pass  # closed by the server: connect again
        finally:
            sock.close()


def probe(probes, end, period=0.2, each=None):
    """Calls probes[0], probes[1], ... in turn (grpcio callables, empty request, 1 s deadline), one
    every `period` s until the monotonic time `end`, calling each() after every probe; returns
    (answered, sent)."""
    import time
    import grpc
    answered = sent = 0
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            probes[sent % len(probes)](b"", timeout=1)
            answered += 1
        except grpc.RpcError:
            pass
        sent += 1
        if each:
            each()
        time.sleep(max(0.0, period - (time.monotonic() - started)))  # paces the probe
    return answered, sent
