#!/usr/bin/env python3
"""Drives a yaad binary with the published `greenstalk` client (pip install greenstalk).

Usage: python3 tests/clients/greenstalk_test.py [path/to/yaad]
The binary defaults to $YAAD_BIN, else target/debug/yaad. Each test runs against a fresh yaad on a
free loopback port with its own data dir, in each storage mode (mapped, lazy, mem).
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import greenstalk

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
YAAD = os.environ.get("YAAD_BIN") or os.path.join(REPO, "target", "debug", "yaad")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Yaad:
    """A yaad process on a free port; stopped with SIGTERM, which must exit 0."""

    def __init__(self, mode, data_dir=None, extra=()):
        self.tmp = None
        if data_dir is None:
            self.tmp = tempfile.mkdtemp(prefix="yaad-greenstalk-")
            data_dir = self.tmp
        self.data_dir = data_dir
        self.port = free_port()
        self.proc = subprocess.Popen(
            [YAAD, "-l", "127.0.0.1", "-p", str(self.port), "--mode", mode, "-b", data_dir, *extra]
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("yaad did not start")
                time.sleep(0.02)

    def client(self, **kw):
        return greenstalk.Client(("127.0.0.1", self.port), **kw)

    def stop(self, cleanup=True):
        self.proc.terminate()
        rc = self.proc.wait(timeout=10)
        if cleanup and self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return rc


class GreenstalkAgainstYaad:
    mode = None

    def setUp(self):
        self.server = Yaad(self.mode)
        self.c = self.server.client()

    def tearDown(self):
        self.c.close()
        self.assertEqual(self.server.stop(), 0)

    def test_put_reserve_delete(self):
        jid = self.c.put("hello", priority=5, ttr=30)
        job = self.c.reserve(timeout=0)
        self.assertEqual((job.id, job.body), (jid, "hello"))
        self.c.delete(job)
        with self.assertRaises(greenstalk.NotFoundError):
            self.c.delete(jid)
        with self.assertRaises(greenstalk.TimedOutError):
            self.c.reserve(timeout=0)

    def test_priority_order_and_release(self):
        a = self.c.put("a", priority=10)
        b = self.c.put("b", priority=1)
        job = self.c.reserve(timeout=0)
        self.assertEqual(job.id, b)
        self.c.release(job, priority=20)
        self.assertEqual(self.c.reserve(timeout=0).id, a)
        self.assertEqual(self.c.stats_job(b)["releases"], 1)

    def test_bury_kick_peek(self):
        jid = self.c.put("x")
        job = self.c.reserve(timeout=0)
        self.c.bury(job)
        self.assertEqual(self.c.peek_buried().id, jid)
        self.assertEqual(self.c.stats_job(jid)["state"], "buried")
        self.assertEqual(self.c.kick(10), 1)
        self.assertEqual(self.c.peek_ready().id, jid)
        self.assertEqual(self.c.peek(jid).body, "x")
        d = self.c.put("later", delay=100)
        self.assertEqual(self.c.peek_delayed().id, d)
        self.c.kick_job(d)
        self.assertEqual(self.c.stats_job(d)["state"], "ready")
        with self.assertRaises(greenstalk.NotFoundError):
            self.c.peek(999)

    def test_touch_and_reserve_job(self):
        jid = self.c.put("t", ttr=10)
        job = self.c.reserve_job(jid)
        self.c.touch(job)
        self.assertEqual(self.c.stats_job(jid)["state"], "reserved")
        self.c.delete(job)

    def test_tubes(self):
        self.assertEqual(self.c.using(), "default")
        self.c.use("emails")
        self.assertEqual(self.c.using(), "emails")
        self.assertEqual(self.c.watch("emails"), 2)
        self.assertEqual(self.c.ignore("default"), 1)
        self.assertEqual(self.c.watching(), ["emails"])
        with self.assertRaises(greenstalk.NotIgnoredError):
            self.c.ignore("emails")
        jid = self.c.put("mail")
        self.assertIn("emails", self.c.tubes())
        st = self.c.stats_tube("emails")
        self.assertEqual(st["name"], "emails")
        self.assertEqual(st["current-jobs-ready"], 1)
        self.c.pause_tube("emails", 100)
        with self.assertRaises(greenstalk.TimedOutError):
            self.c.reserve(timeout=0)
        self.c.pause_tube("emails", 0)
        self.assertEqual(self.c.reserve(timeout=0).id, jid)

    def test_stats(self):
        self.c.put("s")
        st = self.c.stats()
        self.assertEqual(st["current-jobs-ready"], 1)
        self.assertEqual(st["cmd-put"], 1)
        self.assertEqual(st["max-job-size"], 65535)
        self.assertEqual(st["mode"], self.mode)
        self.assertEqual(st["draining"], "false")

    def test_binary_bodies_and_limits(self):
        raw = self.server.client(encoding=None)
        body = bytes(range(256)) + b"\r\n\0"
        jid = raw.put(body)
        self.assertEqual(raw.reserve(timeout=0).body, body)
        raw.put(b"z" * 65535)
        with self.assertRaises(greenstalk.JobTooBigError):
            raw.put(b"z" * 65536)
        raw.delete(jid)
        raw.close()

    def test_disconnect_releases(self):
        jid = self.c.put("r", ttr=100)
        other = self.server.client()
        self.assertEqual(other.reserve(timeout=0).id, jid)
        other.close()
        self.assertEqual(self.c.reserve(timeout=5).id, jid)

    def test_ttr_expiry_and_deadline_soon(self):
        jid = self.c.put("ttr", ttr=1)
        self.c.reserve(timeout=0)
        with self.assertRaises(greenstalk.DeadlineSoonError):
            self.c.reserve(timeout=5)
        other = self.server.client()
        self.assertEqual(other.reserve(timeout=5).id, jid)
        self.assertEqual(other.stats_job(jid)["timeouts"], 1)
        other.close()

    def test_restart_keeps_jobs(self):
        if self.mode == "mem":
            extra = ("-r",)
        else:
            extra = ()
        jid = self.c.put("persist", priority=7)
        self.c.close()
        self.assertEqual(self.server.stop(cleanup=False), 0)
        self.server = Yaad(self.mode, data_dir=self.server.data_dir, extra=extra)
        self.c = self.server.client()
        job = self.c.reserve(timeout=0)
        self.assertEqual((job.id, job.body), (jid, "persist"))
        self.assertEqual(self.c.stats_job(jid)["pri"], 7)
        self.assertGreater(self.c.put("next"), jid)


class Mapped(GreenstalkAgainstYaad, unittest.TestCase):
    mode = "mapped"


class Lazy(GreenstalkAgainstYaad, unittest.TestCase):
    mode = "lazy"


class Mem(GreenstalkAgainstYaad, unittest.TestCase):
    mode = "mem"


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        YAAD = os.path.abspath(sys.argv.pop(1))
    if not os.path.exists(YAAD):
        sys.exit(f"no yaad binary at {YAAD}: build it first (cargo build --bin yaad)")
    unittest.main(verbosity=2)
