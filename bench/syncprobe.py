#!/usr/bin/env python3
"""What a sync costs on this machine's data disk, and whether syncs overlap.

Usage: bench/syncprobe.py [DIR] [SECONDS]   (DIR defaults to $TMPDIR or /tmp; 2 s per case)

Each case repeats a round for SECONDS and prints rounds/s and the round's p50/p99 in µs:
  idle         fdatasync of a file with nothing dirty
  1 file       one 4 KiB pwrite + fdatasync, into a posix_fallocate'd file (as a segment:
               every page written is a new one, its extent converted from unwritten), into a
               file zero-filled and synced before (`zero-filled`: the pages are new to the
               writes but their extent is written already), or over pages already written
               (`overwrite`)
  appends      a 256-byte pwrite + fdatasync, each after the one before (as a segment's
               appends, 16 syncs per page), into a fallocated or a zero-filled file
  N seq        N files, each 4 KiB pwrite + fdatasync, one after the other
  N threads    the same N files, each synced by a thread of its own, all started together
               (a round ends when the last completes): do concurrent flushes overlap?
  N syncfs     N files written, one syncfs of the filesystem
  2 on 1 file  two threads each writing its own page of ONE file and fdatasyncing it, freely
               (not in rounds): syncs/s with two in flight vs one (`1 on 1 file`)
Python releases the GIL around pwrite/fdatasync/syncfs, so threads overlap in the kernel.

On a machine whose cores are busy, a thread woken when its fdatasync completes may wait for a
scheduler tick (4 ms here) before it runs, and every case then measures the scheduler. To see
the device alone, run the probe as a real-time thread: `chrt -f 1 bench/syncprobe.py DIR 2`.
SLICE_US=100 instead asks for a 100 µs scheduler slice for every thread of the probe (Linux
6.12+, x86-64), as yaad's sync thread does.
"""
import ctypes
import os
import sys
import tempfile
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)
SYS_SCHED_SETATTR = 314  # x86-64


class SchedAttr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("policy", ctypes.c_uint32),
                ("flags", ctypes.c_uint64), ("nice", ctypes.c_int32),
                ("priority", ctypes.c_uint32), ("runtime", ctypes.c_uint64),
                ("deadline", ctypes.c_uint64), ("period", ctypes.c_uint64)]


def apply_slice():
    """SLICE_US: a scheduler slice of that many µs for the calling thread (SCHED_OTHER)."""
    us = os.environ.get("SLICE_US")
    if not us:
        return
    attr = SchedAttr(ctypes.sizeof(SchedAttr), 0, 0, os.getpriority(os.PRIO_PROCESS, 0), 0,
                     int(us) * 1000, 0, 0)
    if libc.syscall(SYS_SCHED_SETATTR, 0, ctypes.byref(attr), 0) != 0:
        raise OSError(ctypes.get_errno(), "sched_setattr")
PAGE = 4096
SPAN = 256 << 20  # bytes preallocated per file
BUF = b"x" * PAGE


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else 0.0


class File:
    def __init__(self, d, name, span=SPAN, zero=False):
        self.path = os.path.join(d, name)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self.span = span
        if zero:
            chunk = bytes(1 << 20)
            for off in range(0, span, len(chunk)):
                os.pwrite(self.fd, chunk, off)
        else:
            os.posix_fallocate(self.fd, 0, span)
        os.fsync(self.fd)
        self.off = 0

    def write_new(self):
        os.pwrite(self.fd, BUF, self.off)
        self.off = (self.off + PAGE) % self.span

    def append(self):
        os.pwrite(self.fd, BUF[:256], self.off)
        self.off = (self.off + 256) % self.span

    def write_same(self):
        os.pwrite(self.fd, BUF, 0)

    def sync(self):
        os.fdatasync(self.fd)


def measure(name, round_fn, secs):
    lat = []
    end = time.perf_counter() + secs
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        round_fn()
        lat.append((time.perf_counter() - t0) * 1e6)
    rate = len(lat) / secs
    print(f"{name:<28} {rate:9.0f}/s  p50 {pct(lat, 0.5):7.0f} µs  p99 {pct(lat, 0.99):7.0f} µs",
          flush=True)


class Pool:
    """N threads, one per file, each doing write+fdatasync once per round."""

    def __init__(self, files):
        self.files = files
        self.start = threading.Barrier(len(files) + 1)
        self.done = threading.Barrier(len(files) + 1)
        self.stop = False
        self.threads = [threading.Thread(target=self.run, args=(f,), daemon=True) for f in files]
        for t in self.threads:
            t.start()

    def run(self, f):
        apply_slice()
        while True:
            self.start.wait()
            if self.stop:
                return
            f.write_new()
            f.sync()
            self.done.wait()

    def round(self):
        self.start.wait()
        self.done.wait()

    def close(self):
        self.stop = True
        self.start.wait()


def free_running(files_threads, secs):
    """Each thread writes its own page of its file and fdatasyncs it as fast as it can."""
    counts = [0] * len(files_threads)
    lat = [[] for _ in files_threads]
    end = time.perf_counter() + secs

    def run(i, f, page):
        apply_slice()
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            os.pwrite(f.fd, BUF, page * PAGE)
            f.sync()
            lat[i].append((time.perf_counter() - t0) * 1e6)
            counts[i] += 1

    ts = [threading.Thread(target=run, args=(i, f, p)) for i, (f, p) in enumerate(files_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    all_lat = [x for l in lat for x in l]
    return sum(counts) / secs, pct(all_lat, 0.5), pct(all_lat, 0.99)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TMPDIR", "/tmp")
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    apply_slice()
    work = tempfile.mkdtemp(prefix="syncprobe.", dir=d)
    try:
        files = [File(work, f"f{i}") for i in range(4)]
        dfd = os.open(work, os.O_RDONLY)
        f0 = files[0]
        f0.write_same()
        f0.sync()
        measure("idle fdatasync", f0.sync, secs)
        measure("1 file, new page", lambda: (f0.write_new(), f0.sync()), secs)
        # Zero-filled and fallocated files of the same size, fresh for each case.
        zspan = 64 << 20
        z = File(work, "zero", zspan, zero=True)
        measure("1 file, new page, zero-filled", lambda: (z.write_new(), z.sync()), secs)
        measure("1 file, overwrite", lambda: (f0.write_same(), f0.sync()), secs)
        a = File(work, "append-falloc", zspan)
        measure("appends, fallocated", lambda: (a.append(), a.sync()), secs)
        z.off = zspan // 2
        measure("appends, zero-filled", lambda: (z.append(), z.sync()), secs)
        for n in (2, 3, 4):
            fs = files[:n]
            measure(f"{n} files seq", lambda fs=fs: [(f.write_new(), f.sync()) for f in fs], secs)
            pool = Pool(fs)
            measure(f"{n} files threads", pool.round, secs)
            pool.close()

            def by_syncfs(fs=fs):
                for f in fs:
                    f.write_new()
                if libc.syncfs(dfd) != 0:
                    raise OSError(ctypes.get_errno(), "syncfs")

            measure(f"{n} files syncfs", by_syncfs, secs)
        for n in (1, 2, 3):
            rate, p50, p99 = free_running([(f0, 1 + i) for i in range(n)], secs)
            print(f"{n} on 1 file, free running   {rate:9.0f}/s  p50 {p50:7.0f} µs  p99 {p99:7.0f} µs",
                  flush=True)
        for n in (2, 3):
            rate, p50, p99 = free_running([(files[i], 1) for i in range(n)], secs)
            print(f"{n} on {n} files, free running  {rate:9.0f}/s  p50 {p50:7.0f} µs  p99 {p99:7.0f} µs",
                  flush=True)
    finally:
        for name in os.listdir(work):
            os.unlink(os.path.join(work, name))
        os.rmdir(work)


if __name__ == "__main__":
    main()
