#!/usr/bin/env python3
"""Unit tests of scripts/load.py's pure parts: no server, no load, no network, no sleeps.

The fixtures under scripts/fixtures/ were captured from real runs against `portcullis dev`
(ghz v0.93.0 and h2load nghttp2/1.52.0 on the no-token sample, the dev server's frame of
that sample, and curl's raw replies to the valid and no-token frames), so a tool changing
its output format shows up here rather than as a wrong table.

Run: python3 -m unittest scripts/test_load.py   (or python3 scripts/test_load.py)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import unittest
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402  (after the path setup that makes it importable from anywhere)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ROOT = Path(__file__).resolve().parent.parent


def fixture(name: str) -> str:
    """A text fixture."""
    return (FIXTURES / name).read_text()


class PinsTest(unittest.TestCase):
    """tests/tools.txt is the one pinned list; the script must read it as tests/common/tools.rs does."""

    def test_the_real_pins_give_exact_versions_of_ghz_and_grpcurl(self) -> None:
        pins = load.parse_pins(load.PINS_FILE.read_text())
        expected = {"ghz": "github.com/bojand/ghz/cmd/ghz", "grpcurl": "github.com/fullstorydev/grpcurl/cmd/grpcurl"}
        for name, package in expected.items():
            got_package, version = load.go_pin(pins, name)
            self.assertEqual(got_package, package)
            self.assertRegex(version, r"^v\d+\.\d+\.\d+$")

    def test_comments_blank_lines_and_several_specs(self) -> None:
        text = "# kind name spec\n\n  go  ghz  example.com/ghz/cmd/ghz@v1.2.3  \n"
        text += "pip py a==1 b[x]==2\ngo ghz other@v9.9.9\n"
        pins = load.parse_pins(text)
        self.assertEqual(set(pins), {"ghz", "py"})
        self.assertEqual(pins["py"], load.Pin("pip", "py", ("a==1", "b[x]==2")))
        # The first line for a name wins, as in tools.rs's `find`.
        self.assertEqual(load.go_pin(pins, "ghz"), ("example.com/ghz/cmd/ghz", "v1.2.3"))

    def test_floating_or_missing_versions_are_refused(self) -> None:
        for spec in ["example.com/x@latest", "example.com/x", "example.com/x@master", "@v1.0.0"]:
            with self.subTest(spec=spec), self.assertRaises(ValueError):
                load.go_pin(load.parse_pins(f"go x {spec}\n"), "x")

    def test_a_tool_of_another_kind_or_unknown_is_an_error(self) -> None:
        pins = load.parse_pins("gomod gw github.com/envoyproxy/gateway@v1.9.1\n")
        for name in ["gw", "nope"]:
            with self.subTest(name=name), self.assertRaises(ValueError):
                load.go_pin(pins, name)

    def test_a_line_without_spec_is_an_error(self) -> None:
        with self.assertRaises(ValueError):
            load.parse_pins("go ghz\n")

    def test_go_version_m_gives_the_main_module_version(self) -> None:
        # The first lines of `go version -m` on a go-installed ghz.
        text = (
            "target/tmp/portcullis-test-tools/bin/ghz: go1.26.8\n"
            "\tpath\tgithub.com/bojand/ghz/cmd/ghz\n"
            "\tmod\tgithub.com/bojand/ghz\tv0.93.0\th1:CmJ4SJDyRFs5tFQaIsXfjpyd71VBVRfJjvLcVjg4ubA=\n"
            "\tdep\tgithub.com/BurntSushi/toml\tv0.3.1\th1:WXkYYl6Yr3qBf1K79EBnL4mak0OimBfB0XUf9Vl28OQ=\n"
        )
        self.assertEqual(load.parse_go_version_m(text), "v0.93.0")
        self.assertIsNone(load.parse_go_version_m("/usr/bin/h2load: not a Go binary\n"))


class FramesTest(unittest.TestCase):
    """h2load posts the frame bytes as they are, so the prefix must be exactly gRPC's."""

    def test_the_prefix_is_flag_zero_and_a_big_endian_length(self) -> None:
        self.assertEqual(load.grpc_frame(b""), b"\x00\x00\x00\x00\x00")
        self.assertEqual(load.grpc_frame(b"ab"), b"\x00\x00\x00\x00\x02ab")
        self.assertEqual(load.grpc_frame(b"x" * 0x1_02_03)[:5], b"\x00\x00\x01\x02\x03")

    def test_unframe_round_trips_and_rejects_broken_frames(self) -> None:
        self.assertEqual(load.grpc_unframe(load.grpc_frame(b"hello")), b"hello")
        # Empty, short prefix, compressed flag, length past the end, bytes after the message.
        for broken in [b"", b"\0\0\0", b"\x01\0\0\0\0", b"\0\0\0\0\x02a", b"\0\0\0\0\0z"]:
            with self.subTest(frame=broken), self.assertRaises(ValueError):
                load.grpc_unframe(broken)

    def test_the_dev_frame_holds_the_sample_request(self) -> None:
        # CheckRequest.attributes(1) -> AttributeContext.request(4) -> Request.http(2) -> HttpRequest.path(4).
        message = load.grpc_unframe((FIXTURES / "no-token.bin").read_bytes())

        def field(data: bytes, number: int) -> bytes:
            values = [v for n, wire, v in load.proto_fields(data) if n == number and wire == 2]
            assert len(values) == 1 and isinstance(values[0], bytes), values
            return values[0]

        http = field(field(field(message, 1), 4), 2)
        self.assertEqual(field(http, 4), b"/api/items")
        self.assertEqual(field(http, 2), b"GET")

    def test_decisions_read_from_real_replies(self) -> None:
        allow = load.grpc_unframe((FIXTURES / "check-response-allow.bin").read_bytes())
        deny = load.grpc_unframe((FIXTURES / "check-response-deny.bin").read_bytes())
        self.assertEqual(load.check_response_code(allow), 0)
        self.assertEqual(load.check_response_code(deny), load.GRPC_UNAUTHENTICATED)

    def test_varints_and_truncation(self) -> None:
        self.assertEqual(load.read_varint(b"\xac\x02", 0), (300, 2))
        self.assertEqual(load.check_response_code(b"\x0a\x02\x08\x07"), 7)  # status { code: 7 }
        self.assertEqual(load.check_response_code(b""), 0)
        with self.assertRaises(ValueError):
            load.read_varint(b"\x80", 0)
        with self.assertRaises(ValueError):
            list(load.proto_fields(b"\x0a\x05ab"))


class ParseTest(unittest.TestCase):
    """Tool output as the tools print it."""

    def test_ghz_summary(self) -> None:
        m = load.parse_ghz(fixture("ghz-no-token.json"))
        self.assertEqual(m.count, 20)
        self.assertAlmostEqual(m.rps, 1831.2202730001495)
        self.assertAlmostEqual(m.p50 or 0, 0.895908)  # 895908 ns
        self.assertAlmostEqual(m.p99 or 0, 4.169530)
        self.assertEqual(m.errors, 0)

    def test_ghz_errors_are_calls_not_ok(self) -> None:
        report = json.loads(fixture("ghz-no-token.json"))
        report["statusCodeDistribution"] = {"OK": 17, "Unavailable": 3}
        self.assertEqual(load.parse_ghz(json.dumps(report)).errors, 3)
        no_latencies = load.parse_ghz('{"count": 0, "rps": 0, "latencyDistribution": null}')
        self.assertEqual((no_latencies.p50, no_latencies.p99, no_latencies.errors), (None, None, 0))

    def test_h2load_output_and_log(self) -> None:
        m = load.parse_h2load(fixture("h2load-no-token.out"), fixture("h2load-no-token.log"), 15)
        self.assertEqual(m.count, 124)
        self.assertEqual(m.rps, 2480.0)  # "finished in 52.29ms, 2480.00 req/s"
        self.assertEqual(m.p50, 1.252)
        self.assertEqual(m.p99, 2.686)
        self.assertEqual(m.errors, 0)

    def test_h2load_non_200_and_missing_summary(self) -> None:
        log = "1\t200\t1000\n2\t503\t3000\nshort line\n3\t200\t2000\n"
        m = load.parse_h2load("no summary line", log, 2)
        self.assertEqual((m.count, m.rps, m.errors, m.p50, m.p99), (3, 1.5, 1, 2.0, 3.0))

    def test_percentile_is_nearest_rank_as_before(self) -> None:
        values = [float(v) for v in range(1, 101)]
        self.assertEqual(load.percentile(values, 50), 51.0)
        self.assertEqual(load.percentile(values, 99), 100.0)
        self.assertEqual(load.percentile([4.0], 99), 4.0)
        self.assertIsNone(load.percentile([], 50))

    def test_grpcurl_decision(self) -> None:
        self.assertEqual(load.parse_grpcurl_decision('{"status": {}, "okResponse": {}}'), 0)
        self.assertEqual(load.parse_grpcurl_decision('{"status": {"code": 16, "message": ""}}'), 16)

    def test_proc_stat_cpu_with_spaces_in_the_name(self) -> None:
        stat = "4242 (tokio runtime) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 9 0 100 0 0\n"
        self.assertEqual(load.parse_proc_cpu_ticks(stat), 1234 + 567)

    def test_cpu_model(self) -> None:
        info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nprocessor\t: 1\nmodel name\t: X\n"
        self.assertEqual(load.parse_cpu_model(info), "AMD EPYC")
        self.assertIsNone(load.parse_cpu_model("processor : 0\n"))


def row(tool: str, rate: int, name: str, rps: float, p50: float | None, p99: float | None, cpu: float) -> load.Row:
    """A table row with round numbers."""
    return load.Row(tool, rate, name, load.Measurement(int(rps * 10), rps, p50, p99, 0), cpu)


class ReduceTest(unittest.TestCase):
    """Ratios against the same tool's baseline at the same load, and CPU per request."""

    def test_cpu_per_request(self) -> None:
        # 250 ticks at 100 Hz = 2.5 s of CPU over 100 000 requests = 25 µs each.
        self.assertAlmostEqual(load.cpu_us_per_request(250, 100, 100_000), 25.0)
        self.assertAlmostEqual(load.cpu_us_per_request(3, 100, 0), 30_000.0)  # no division by zero

    def test_ratio(self) -> None:
        self.assertEqual(load.ratio(18710, 35698), "0.52")
        self.assertEqual(load.ratio(None, 1.0), "-")
        self.assertEqual(load.ratio(1.0, 0), "-")

    def test_table_pairs_each_row_with_its_own_baseline(self) -> None:
        rows = [
            row("ghz", 0, "health", 1000, 1.0, 4.0, 20.0),
            row("ghz", 0, "valid", 500, 2.0, 6.0, 33.04),
            row("ghz", 1000, "health", 1000, 0.2, 0.4, 90.0),
            row("ghz", 1000, "valid", 1000, 0.3, 0.5, 108.0),
            row("h2load", 0, "health", 4000, 0.5, 1.0, 16.0),
            row("h2load", 0, "no-token", 1000, None, 2.0, 40.0),
        ]
        lines = load.render_table(rows).splitlines()
        self.assertEqual(lines[:2], load.TABLE_HEADER.splitlines())
        self.assertEqual(
            lines[2:],
            [
                "| ghz | max | grpc.health.v1.Health/Check (baseline) | 10000 | 1000 | 1.000 | 4.000 | 0 | 1.00 | 1.00 | 1.00 | 20.0 |",
                "| ghz | max | Authorization/Check, valid RS256 token (allow) | 5000 | 500 | 2.000 | 6.000 | 0 | 0.50 | 2.00 | 1.50 | 33.0 |",
                "| ghz | 1000 rps | grpc.health.v1.Health/Check (baseline) | 10000 | 1000 | 0.200 | 0.400 | 0 | 1.00 | 1.00 | 1.00 | 90.0 |",
                "| ghz | 1000 rps | Authorization/Check, valid RS256 token (allow) | 10000 | 1000 | 0.300 | 0.500 | 0 | 1.00 | 1.50 | 1.25 | 108.0 |",
                "| h2load | max | grpc.health.v1.Health/Check (baseline) | 40000 | 4000 | 0.500 | 1.000 | 0 | 1.00 | 1.00 | 1.00 | 16.0 |",
                "| h2load | max | Authorization/Check, no token (deny) | 10000 | 1000 | - | 2.000 | 0 | 0.25 | - | 2.00 | 40.0 |",
            ],
        )

    def test_a_row_without_baseline_has_no_ratios(self) -> None:
        line = load.render_table([row("h2load", 0, "valid", 100, 1.0, 2.0, 30.0)]).splitlines()[2]
        self.assertIn("| 0 | - | - | - | 30.0 |", line)

    def test_the_table_has_the_columns_of_the_published_one(self) -> None:
        doc = (ROOT / "docs" / "performance.md").read_text()
        self.assertIn(load.TABLE_HEADER, doc)


def info() -> load.RunInfo:
    """A RunInfo with fixed values."""
    return load.RunInfo(
        when="2026-01-02 03:04 UTC",
        revision="abc1234",
        cpus=2,
        cpu_model="AMD EPYC",
        kernel="6.18.0",
        duration=15,
        warmup=2,
        rust_log="info",
        rate=1000,
        ghz_version="v0.93.0",
        ghz_concurrency=64,
        ghz_connections=4,
        h2load_version="h2load nghttp2/1.52.0",
        h2_clients=4,
        h2_streams=16,
        valid_frame_bytes=932,
        no_token_frame_bytes=117,
    )


class SpliceTest(unittest.TestCase):
    """The section replaces only what is between the markers."""

    DOC = "# Perf\n\nbefore\n<!-- load:begin (old words) -->\nold\ntable\n<!-- load:end -->\nafter\n\n- tail\n"

    def test_the_section_is_replaced_and_nothing_else(self) -> None:
        section = "<!-- load:begin (new) -->\nnew\n<!-- load:end -->"
        out = load.splice(self.DOC, section)
        self.assertEqual(out, "# Perf\n\nbefore\n" + section + "\nafter\n\n- tail\n")
        self.assertEqual(load.splice(out, section), out)

    def test_missing_repeated_or_reversed_markers_are_errors(self) -> None:
        end, begin = "<!-- load:end -->", "<!-- load:begin -->"
        for doc in ["no markers\n", f"{begin}\nonly begin\n", f"only end\n{end}\n", f"{end}\n{begin}\n", self.DOC * 2]:
            with self.subTest(doc=doc), self.assertRaises(load.LoadError):
                load.splice(doc, f"{begin}\nx\n{end}")

    def test_the_rendered_section_splices_into_the_real_doc(self) -> None:
        doc = (ROOT / "docs" / "performance.md").read_text()
        section = load.render_section(info(), load.render_table([row("ghz", 0, "health", 1000, 1.0, 2.0, 20.0)]))
        self.assertTrue(section.startswith(load.SECTION_BEGIN) and section.endswith(load.END_MARKER))
        out = load.splice(doc, section)
        start, end = doc.index(load.BEGIN_MARKER), doc.index(load.END_MARKER) + len(load.END_MARKER)
        self.assertEqual(out, doc[:start] + section + doc[end:])
        self.assertEqual(load.splice(out, section), out)
        run_line = "Run: 2026-01-02 03:04 UTC · revision `abc1234` · 2 CPUs · AMD EPYC · Linux 6.18.0\n"
        self.assertIn(run_line, section)
        self.assertIn("valid 932 B, no-token 117 B, health 5 B", section)
        self.assertIn('"1000 rps" is ghz\'s fixed-rate mode', section)
        without_rate = load.render_section(dataclasses.replace(info(), rate=0), "")
        self.assertIn("closed-loop (every client keeps its streams busy); no fixed-rate runs (RATE=0).", without_rate)


class SettingsTest(unittest.TestCase):
    """Environment variables keep working as defaults; flags override them."""

    def parse(self, environ: dict[str, str], argv: list[str]) -> object:
        """parse_args under exactly `environ` (plus PATH)."""
        with mock.patch.dict(os.environ, {"PATH": os.environ.get("PATH", ""), **environ}, clear=True):
            return load.parse_args(argv)

    def test_defaults_env_and_flags(self) -> None:
        args = self.parse({}, [])
        defaults = (args.duration, args.rate, args.doc, args.no_install)
        self.assertEqual(defaults, (15, 1000, "docs/performance.md", False))
        args = self.parse({"DURATION": "3", "WARMUP": "1", "RATE": "0", "DOC": "", "NO_INSTALL": "1"}, [])
        self.assertEqual((args.duration, args.warmup, args.rate, args.doc, args.no_install), (3, 1, 0, "", True))
        args = self.parse({"DURATION": "", "AUTHZ_ADDR": "127.0.0.1:1"}, ["--duration", "7", "--authz-addr", "[::1]:2"])
        self.assertEqual((args.duration, args.authz_addr), (7, "[::1]:2"))

    def test_a_non_loopback_address_is_refused(self) -> None:
        with mock.patch("sys.stderr"), self.assertRaises(SystemExit):
            self.parse({"AUTHZ_ADDR": "0.0.0.0:50151"}, [])
        self.assertTrue(load.is_loopback("localhost:1") and not load.is_loopback("10.0.0.1:1"))

    def test_client_command_lines(self) -> None:
        args = self.parse({}, [])
        tools = load.Tools(Path("ghz"), "v0.93.0", (), Path("grpcurl"), Path("h2load"), Path("curl"))
        warmup = load.ghz_command(args, tools, load.CHECK_CALL, ["-D", "v.json", "--rps", "5"], None)
        self.assertEqual(warmup[warmup.index("-z") + 1], "2s")
        self.assertNotIn("--duration-stop", warmup)
        measured = load.ghz_command(args, tools, load.CHECK_CALL, ["-D", "v.json"], Path("out.json"))
        self.assertEqual(measured[-1], "127.0.0.1:50151")
        self.assertEqual(measured[measured.index("-z") + 1], "15s")
        self.assertIn("--duration-stop", measured)
        h2 = load.h2load_command(args, tools, load.CHECK_PATH, Path("v.bin"), 15)
        self.assertEqual(h2[-1], "http://127.0.0.1:50151/envoy.service.auth.v3.Authorization/Check")
        self.assertEqual(h2[h2.index("-d") + 1], "v.bin")


class CompareTest(unittest.TestCase):
    """The comparison against the floor: request encoding, churn tokens, ratios per round, the table."""

    def test_the_encoded_request_reads_back_as_the_dev_frame_does(self) -> None:
        # The dev server's no-token frame (written by prost) and ours hold the same fields and headers.
        def fields(message: bytes) -> tuple[dict[int, bytes], set[tuple[bytes, bytes]]]:
            (_, _, attributes), = load.proto_fields(message)
            request = dict((f, v) for f, _, v in load.proto_fields(attributes))[4]
            http = dict((f, v) for f, _, v in load.proto_fields(request))[2]
            scalars, headers = {}, set()
            for field, _, value in load.proto_fields(http):
                if field == 3:
                    entry = dict((f, v) for f, _, v in load.proto_fields(value))
                    headers.add((entry[1], entry[2]))
                else:
                    scalars[field] = value
            return scalars, headers

        dev = load.grpc_unframe((FIXTURES / "no-token.bin").read_bytes())
        ours = load.check_request("GET", "/api/items", "api.local", [])
        self.assertEqual(fields(ours), fields(dev))

    def test_varint_encoding_round_trips(self) -> None:
        for value in [0, 1, 127, 128, 300, 2**35]:
            self.assertEqual(load.read_varint(load.proto_varint(value), 0), (value, len(load.proto_varint(value))))

    def test_churn_tokens_are_distinct_valid_hs256(self) -> None:
        requests = load.churn_requests(3, 1_700_000_000)
        tokens = [r["attributes"]["request"]["http"]["headers"]["authorization"].removeprefix("Bearer ") for r in requests]
        self.assertEqual(len(set(tokens)), 3)
        header, payload, signature = tokens[1].split(".")
        expected = load.hmac.new(load.BENCH_SECRET.encode(), f"{header}.{payload}".encode(), load.hashlib.sha256)
        self.assertEqual(signature, load.b64url(expected.digest()))
        claims = json.loads(load.base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        self.assertEqual((claims["sub"], claims["aud"], claims["exp"]), ("user-1", load.BENCH_AUDIENCE, 1_700_003_600))

    def test_ratios_are_per_round_and_the_median_is_taken(self) -> None:
        rounds = [{"floor": 100.0, "cached": 110.0}, {"floor": 50.0, "cached": 40.0}, {"cached": 1.0}]
        self.assertEqual(load.round_ratios(rounds), {"floor": [1.0, 1.0], "cached": [1.1, 0.8]})
        self.assertEqual(load.median([3.0, 1.0, 2.0]), 2.0)
        self.assertEqual(load.median([1.0, 2.0]), 1.5)
        self.assertIsNone(load.median([]))

    def test_ab_ratio_pairs_rounds(self) -> None:
        self.assertEqual(load.ab_ratio([110.0, 90.0, 100.0], [100.0, 100.0, 100.0]), 1.0)
        self.assertIsNone(load.ab_ratio([], []))

    def test_banner_rss_and_ghz_details(self) -> None:
        banner = "  dev issuer     : http://127.0.0.1:4321   (JWKS http://127.0.0.1:4321/jwks)\nTOKEN_VALID=a.b.c\n"
        self.assertEqual(load.parse_banner(banner), ("http://127.0.0.1:4321", "a.b.c"))
        with self.assertRaises(load.LoadError):
            load.parse_banner("nothing here")
        self.assertEqual(load.parse_rss_kib("Name:\tx\nVmRSS:\t   12345 kB\n"), 12345)
        details = json.dumps({"details": [{"latency": 2_000_000}, {"latency": 1_000_000}]})
        self.assertEqual(load.parse_ghz_details(details), [1.0, 2.0])

    def test_the_table_has_a_row_per_target(self) -> None:
        results = [load.Compared(t, rps=[100.0], ratios=[1.0], cpu_us=[10.0], rss_kib=2048) for t in load.COMPARE_TARGETS]
        table = load.render_compare(results)
        self.assertEqual(len(table.splitlines()), 2 + len(load.COMPARE_TARGETS))
        self.assertIn("| **1.00** | 1.00 |", table)

    def test_the_bench_config_names_both_issuers_and_the_rule(self) -> None:
        listen = {"authz": "127.0.0.1:1", "http": "127.0.0.1:2", "admin": "127.0.0.1:3"}
        text = load.bench_config(listen, "http://127.0.0.1:4321", 0)
        self.assertIn("cache: { tokens: 0 }", text)
        self.assertIn('issuer: "http://127.0.0.1:4321"', text)
        self.assertIn("when:", text)


if __name__ == "__main__":
    unittest.main()
