"""Unit tests for scripts/soak.py's pure parts: the server histogram's per-minute quantiles,
the decision checks, the doc splice. Runs no server (tests/load_tool.rs runs this file)."""

from __future__ import annotations

import sys
import unittest
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import soak  # noqa: E402

METRICS = """# TYPE portcullis_check_duration_seconds histogram
portcullis_check_duration_seconds_bucket{face="ext_authz_grpc",le="0.000001"} 0
portcullis_check_duration_seconds_bucket{face="ext_authz_grpc",le="0.000016"} {a}
portcullis_check_duration_seconds_bucket{face="ext_authz_grpc",le="0.000128"} {b}
portcullis_check_duration_seconds_bucket{face="ext_authz_grpc",le="+Inf"} {c}
portcullis_check_duration_seconds_count{face="ext_authz_grpc"} {c}
portcullis_checks_total{route="api",decision="allow",reason="ok",face="ext_authz_grpc"} 7
"""


def metrics(a: int, b: int, c: int) -> str:
    return METRICS.replace("{a}", str(a)).replace("{b}", str(b)).replace("{c}", str(c))


def allow() -> SimpleNamespace:
    return SimpleNamespace(status=SimpleNamespace(code=0), ok_response=SimpleNamespace(headers=[]))


def deny(status: int) -> SimpleNamespace:
    return SimpleNamespace(status=SimpleNamespace(code=7), denied_response=SimpleNamespace(status=SimpleNamespace(code=status)))


class HistogramTests(unittest.TestCase):
    def test_buckets_are_read_with_inf_last(self) -> None:
        self.assertEqual(soak.histogram(metrics(5, 9, 10)), [(1e-06, 0.0), (1.6e-05, 5.0), (0.000128, 9.0), (float("inf"), 10.0)])

    def test_quantiles_are_of_the_minute_not_of_the_whole_run(self) -> None:
        before = soak.histogram(metrics(1000, 1000, 1000))
        # This minute: 100 checks, 10 under 16 µs, 90 more under 128 µs.
        after = soak.histogram(metrics(1010, 1100, 1100))
        self.assertEqual(soak.histogram_quantile(before, after, 0.5), "≤ 128 µs")
        self.assertEqual(soak.histogram_quantile(before, after, 0.05), "≤ 16 µs")

    def test_a_minute_without_checks_and_the_overflow_bucket(self) -> None:
        same = soak.histogram(metrics(1, 2, 3))
        self.assertEqual(soak.histogram_quantile(same, same, 0.5), "-")
        slow = soak.histogram(metrics(1, 2, 13))
        self.assertEqual(soak.histogram_quantile(same, slow, 0.99), "> 131 ms")


class DecisionCheckTests(unittest.TestCase):
    def test_denies_must_have_the_expected_status(self) -> None:
        expect = soak.denied_with(401)
        self.assertIsNone(expect(deny(401), "u"))
        self.assertEqual(expect(deny(403), "u"), "denied with 403, expected 401")
        self.assertEqual(expect(allow(), "u"), "allowed, expected a 401 deny")

    def test_allows_must_be_allows(self) -> None:
        self.assertIsNone(soak.allowed(allow(), "u"))
        self.assertEqual(soak.allowed(deny(401), "u"), "denied with 401, expected allow")

    def test_hasura_sessions_must_carry_the_callers_identity_and_the_secret(self) -> None:
        headers = [
            SimpleNamespace(header=SimpleNamespace(key=name, value=value))
            for name, value in [("x-hasura-user-id", "u"), ("x-hasura-role", "user"), ("x-hasura-admin-secret", soak.HASURA_SECRET)]
        ]
        good = SimpleNamespace(status=SimpleNamespace(code=0), ok_response=SimpleNamespace(headers=headers))
        self.assertIsNone(soak.hasura_session(good, "u"))
        self.assertIn("x-hasura-user-id", soak.hasura_session(good, "someone-else") or "")

    def test_every_kind_of_the_mix_is_a_case(self) -> None:
        self.assertEqual(
            set(soak.MIX),
            {"valid", "hasura", "supabase", "expired", "forged", "unknown_kid", "no_token", "wrong_audience", "retired_key", "revoked"},
        )

    def test_revoked_tokens_are_due_only_after_the_propagation_bound(self) -> None:
        import random

        revoked = soak.Revoked(propagation=3600)
        revoked.add("user-10001", "token")
        self.assertIsNone(revoked.pick(random.Random(1)))
        revoked.propagation = 0
        self.assertEqual(revoked.pick(random.Random(1)), ("user-10001", "token"))


class SpliceTests(unittest.TestCase):
    def test_the_section_between_the_markers_is_replaced(self) -> None:
        doc = f"intro\n{soak.BEGIN}\nold\n{soak.END}\noutro\n"
        self.assertEqual(soak.splice(doc, "new"), f"intro\n{soak.BEGIN}\nnew\n{soak.END}\noutro\n")

    def test_a_doc_without_markers_is_refused(self) -> None:
        with self.assertRaises(soak.load.LoadError):
            soak.splice("no markers here", "new")


if __name__ == "__main__":
    unittest.main()
