"""zaptid serve on the wire: an independent client (Debian's python3-grpcio, no generated code)."""
import signal

import grpc

from harness import (ZaptidTestCase, batch_ids, fields, raw_channel_call, read_varint, string_field,
                     batch_request, varint)


class WireTest(ZaptidTestCase):
    def setUp(self):
        super().setUp()
        self.server = self.start_server(machine_id=4242)
        self.channel = grpc.insecure_channel(self.server.address)
        self.addCleanup(self.channel.close)

    def call(self, method, request=b"", timeout=5):
        return raw_channel_call(self.channel, method)(request, timeout=timeout)

    def test_gen_as_zaptidgen_clients_call_it(self):
        # IdRequest is empty; IdResponse is {bool error = 1; uint64 id = 2;}. A successful answer
        # leaves error at its default, so proto3 sends only field 2 as a varint (tag 0x10).
        ids = []
        for _ in range(50):
            resp = self.call("/idgen.IdGen/Gen", b"")
            self.assertEqual(resp[0], 0x10, resp.hex())
            value, end = read_varint(resp, 1)
            self.assertEqual(end, len(resp), resp.hex())
            ids.append(value)
        self.assertEqual(ids, sorted(set(ids)))
        for i in ids:
            self.assertEqual(i >> 63, 0)
            self.assertEqual(i & 0xFFFF, 4242)  # Sonyflake: machine id in the low 16 bits
        # The same IDs decode with zaptid decode (time in 10 ms units since 2014-09-01).
        r = self.zaptid("decode", "--format", "tsv", ids[0])
        self.assertEqual(r.stdout.split("\t")[4].strip(), "4242")

    def test_gen_batch(self):
        ids = batch_ids(self.call("/idgen.IdGen/GenBatch", batch_request(1000)))
        self.assertEqual(len(ids), 1000)
        self.assertEqual(ids, sorted(set(ids)))
        self.assertTrue(all(i & 0xFFFF == 4242 for i in ids))

    def test_info(self):
        info = {}
        for num, _, v in fields(self.call("/idgen.IdGen/Info")):
            info.setdefault(num, []).append(v)
        self.assertEqual(info[2], [b"sonyflake"])
        self.assertEqual(info[3], [1409529600000])  # 2014-09-01T00:00:00Z
        self.assertEqual(info[4], [10])
        self.assertEqual((info[5], info[6], info[7]), ([39], [8], [16]))
        self.assertNotIn(8, info)  # machine_above_sequence false: not sent
        self.assertEqual(info[9], [varint(4242)])  # packed [4242]
        self.assertEqual(info[10], [6400])

    def test_bad_batch_counts(self):
        for count in (0, 6401, 10**9):
            with self.assertRaises(grpc.RpcError) as cm:
                self.call("/idgen.IdGen/GenBatch", batch_request(count))
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("count must be from 1 to 6400", cm.exception.details())
        self.assertEqual(len(batch_ids(self.call("/idgen.IdGen/GenBatch", batch_request(6400)))), 6400)

    def test_health(self):
        # HealthCheckRequest{string service = 1}; HealthCheckResponse{ServingStatus status = 1}, SERVING = 1.
        check = "/grpc.health.v1.Health/Check"
        self.assertEqual(self.call(check, b""), varint(1 << 3) + varint(1))
        self.assertEqual(self.call(check, string_field(1, "idgen.IdGen")), varint(1 << 3) + varint(1))
        with self.assertRaises(grpc.RpcError) as cm:
            self.call(check, string_field(1, "no.Such"))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_health_watch_streams_the_status_until_the_server_stops(self):
        # Watch sends the current status at once and keeps the stream open; a stopping server
        # sends NOT_SERVING (2) and ends the stream with UNAVAILABLE. An unknown service is
        # SERVICE_UNKNOWN (3), not an error, as the health protocol asks of Watch.
        watch = self.channel.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=None,
                                          response_deserializer=None)
        unknown = watch(string_field(1, "no.Such"), timeout=30)
        self.assertEqual(next(unknown), varint(1 << 3) + varint(3))
        unknown.cancel()
        stream = watch(string_field(1, "idgen.IdGen"), timeout=30)
        self.assertEqual(next(stream), varint(1 << 3) + varint(1))
        self.server.proc.send_signal(signal.SIGTERM)
        self.assertEqual(next(stream), varint(1 << 3) + varint(2))
        with self.assertRaises(grpc.RpcError) as cm:
            next(stream)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(self.server.stop(), 0)

    def test_reflection_describes_the_service(self):
        # file_containing_symbol (field 4) answers with file_descriptor_response (field 4) holding
        # serialized FileDescriptorProtos (field 1); the first names the file ("idgen.proto").
        stream = self.channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                            request_serializer=None, response_deserializer=None)
        responses = list(stream(iter([string_field(4, "idgen.IdGen"), string_field(4, "no.Such"),
                                      string_field(3, "grpc/health/v1/health.proto")]), timeout=5))
        self.assertEqual(len(responses), 3)
        found = dict((num, v) for num, _, v in fields(responses[0]))
        files = [v for num, _, v in fields(found[4]) if num == 1]
        self.assertEqual([v for num, _, v in fields(files[0]) if num == 1], [b"idgen.proto"])
        missing = dict((num, v) for num, _, v in fields(responses[1]))
        self.assertIn(7, missing)  # error_response{error_code = 1: NOT_FOUND (5)}
        self.assertEqual(dict((n, v) for n, _, v in fields(missing[7]))[1], 5)
        health = dict((num, v) for num, _, v in fields(responses[2]))
        files = [v for num, _, v in fields(health[4]) if num == 1]
        self.assertEqual([v for num, _, v in fields(files[0]) if num == 1], [b"grpc/health/v1/health.proto"])

    def test_reflection_lists_the_service(self):
        # ServerReflectionRequest{string list_services = 7}; the response's list_services_response
        # (field 6) holds ServiceResponse{string name = 1} entries.
        stream = self.channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                            request_serializer=None, response_deserializer=None)
        responses = list(stream(iter([string_field(7, "")]), timeout=5))
        self.assertEqual(len(responses), 1)
        names = []
        for num, _, v in fields(responses[0]):
            if num == 6:
                for _, _, service in fields(v):
                    names += [name.decode() for n, _, name in fields(service) if n == 1]
        self.assertIn("idgen.IdGen", names)
        self.assertIn("grpc.health.v1.Health", names)

    def test_a_call_without_a_valid_request_is_invalid_argument(self):
        # Gen and GenBatch read their request themselves (lib/server/calls.h, IdGenService), so
        # bytes that are not the request, or no request at all, are the client's error, as
        # reflection's are; gRPC's unary path answered INTERNAL "Unable to parse request".
        for method, name in (("Gen", "idgen.IdRequest"), ("GenBatch", "idgen.BatchRequest")):
            with self.assertRaises(grpc.RpcError) as cm:
                self.call(f"/idgen.IdGen/{method}", b"\xff\xff")
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertEqual(cm.exception.details(), f"the request is not an {name}")
        from h2raw import H2Client
        c = H2Client(self.server.port)
        self.addCleanup(c.close)
        sid = c.start_call("/idgen.IdGen/Gen", end_stream=True)  # half-closed at once, no message
        c.flush()
        c.pump_until(lambda: c.responses[sid]["ended"], 5)
        headers = dict(c.responses[sid]["headers"])
        self.assertEqual((headers.get("grpc-status"), headers.get("grpc-message")),
                         ("3", "the call ended without a request"))


if __name__ == "__main__":
    import unittest
    unittest.main()
