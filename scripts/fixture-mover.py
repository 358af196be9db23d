#!/usr/bin/env python3
"""Moves the counters of a COPY of a fixture tree as a busy host would.

    scripts/fixture-mover.py --from tests/fixtures/x86_64-bench-8c-4i-4d DIR
    scripts/fixture-mover.py DIR            # DIR already a copy

Copies the fixture tree to DIR (with --from; DIR must not exist), then
rewrites its files until stopped (SIGTERM, SIGINT), --seconds pass, or
--steps steps are done. An agent pointed at DIR (--path-procfs DIR/proc
--path-sysfs DIR/sys --path-rootfs DIR) then sees values that move every
second, as on a busy 8-core host:

- proc/stat: each CPU line gains USER_HZ (100) jiffies a second, split at
  random among user, nice, system, idle, iowait, irq and softirq, with each
  CPU's busy share drawn anew every second; the `cpu` line is their sum;
  intr, ctxt and processes grow too.
- proc/meminfo: MemFree, MemAvailable, Cached, Buffers, Active, Inactive,
  AnonPages and Dirty jitter by a few MB a second.
- proc/net/dev: bytes and packets grow on every interface but lo (0-2 MB/s
  received, 0-200 kB/s sent, drawn every second), lo a little.
- proc/diskstats: reads, writes, sectors and times grow on the whole disks
  (NVMe multipath paths and namespaces that have I/O of their own), a few
  MB/s each; a partition whose counters matched its disk's keeps matching.
- proc/loadavg: the kernel's 1/5/15 minute averages of a random run queue,
  every 5 s; proc/uptime advances (idle by the CPUs' idle jiffies).
- proc/net/sockstat, sockstat6: in-use counts jitter by one or two.
- hwmon temp*_input, thermal_zone*/temp: +-1 degree steps now and then.
- proc/NNN directories: the process count the agent lists wanders around
  300 (a few start and exit every second).

Counters move in steps of 1/--steps-per-second of a second (default 10), so
an agent sampling once a second sees a second's worth whatever its phase;
the per-second rates and levels change once a second. Every file is written
to a temporary name in its folder and renamed over the old one, so a reader
never sees half a file. The randomness is seeded (--seed): the same seed
gives the same sequence of values.

The tree's `mounts` and the mount points are left alone: the agent sizes
every mount point with statvfs, so all of them report the filesystem that
holds DIR.

Only the Python standard library is used.
"""

import argparse
import math
import os
import random
import re
import shutil
import signal
import sys
import time

USER_HZ = 100
# A run-queue sample feeds the load averages every 5 s, as in the kernel.
LOAD_PERIOD = 5.0
PROCESSES = 300


def write_atomic(path, text):
    """Writes `text` to a temporary file next to `path`, then renames it."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, "." + name + ".mover-tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


class Stat:
    """proc/stat: per-CPU jiffies and the counters after them."""

    COLUMNS = 10  # user nice system idle iowait irq softirq steal guest guest_nice

    def __init__(self, text):
        self.cpus = []  # per CPU: list of COLUMNS ints
        self.rest = []  # other lines, as [key, values]
        for line in text.splitlines():
            fields = line.split()
            if not fields:
                continue
            if fields[0].startswith("cpu") and fields[0] != "cpu":
                ticks = [int(v) for v in fields[1:]]
                self.cpus.append(ticks + [0] * (self.COLUMNS - len(ticks)))
            elif fields[0] != "cpu":
                self.rest.append(fields)
        self.columns = max(len(line.split()) - 1 for line in text.splitlines() if line.startswith("cpu"))
        self.busy = [0.3] * len(self.cpus)

    def new_second(self, rng):
        # Each CPU's busy share wanders between 2 % and 98 %.
        self.busy = [min(0.98, max(0.02, b + rng.uniform(-0.25, 0.25))) for b in self.busy]

    def step(self, rng, fraction):
        jiffies = USER_HZ * fraction
        for ticks, busy in zip(self.cpus, self.busy):
            total = int(jiffies) + (1 if rng.random() < jiffies - int(jiffies) else 0)
            busy_j = round(total * busy)
            user = round(busy_j * rng.uniform(0.5, 0.85))
            system = round((busy_j - user) * rng.uniform(0.6, 0.9))
            softirq = rng.randint(0, (busy_j - user - system) // 2)
            irq = busy_j - user - system - softirq
            nice = 1 if user > 0 and rng.random() < 0.05 else 0
            iowait = rng.randint(0, max(0, (total - busy_j) // 10))
            idle = total - busy_j - iowait
            for column, value in ((0, user - nice), (1, nice), (2, system), (3, idle),
                                  (4, iowait), (5, irq), (6, softirq)):
                ticks[column] += value
        for fields in self.rest:
            if fields[0] == "intr":
                fields[1] = str(int(fields[1]) + rng.randint(800, 1500))
            elif fields[0] == "ctxt":
                fields[1] = str(int(fields[1]) + rng.randint(1500, 3000))
            elif fields[0] == "processes":
                fields[1] = str(int(fields[1]) + rng.randint(0, 3))

    def idle_seconds(self):
        return sum(t[3] + t[4] for t in self.cpus) / USER_HZ

    def text(self):
        n = self.columns
        total = [sum(t[i] for t in self.cpus) for i in range(n)]
        lines = ["cpu  " + " ".join(map(str, total))]
        lines += ["cpu%d %s" % (i, " ".join(map(str, t[:n]))) for i, t in enumerate(self.cpus)]
        lines += [" ".join(fields) for fields in self.rest]
        return "\n".join(lines) + "\n"


class Meminfo:
    """proc/meminfo: `Name:   value kB` lines, alignment kept."""

    LINE = re.compile(r"^(\S+:)(\s*)(\d+)( kB)?$")
    JITTER = ("MemFree", "MemAvailable", "Cached", "Buffers", "Active", "Inactive",
              "AnonPages", "Dirty")

    def __init__(self, text):
        self.lines = []
        for line in text.splitlines():
            m = self.LINE.match(line)
            if m:
                label, space, value, unit = m.groups()
                self.lines.append([label, len(space) + len(value), int(value), unit or ""])
            else:
                self.lines.append([line, None, None, None])
        self.base = {l[0][:-1]: l[2] for l in self.lines if l[1] is not None}
        self.total = self.base.get("MemTotal", 0)

    def new_second(self, rng):
        for entry in self.lines:
            name = entry[0][:-1]
            if entry[1] is None or name not in self.JITTER:
                continue
            base = self.base[name]
            if name == "Dirty":
                entry[2] = rng.randint(0, 64 * 1024)
                continue
            # A random walk of up to 8 MB a second, within 5 % of the
            # captured value (and of the memory's size).
            step = rng.randint(-8192, 8192)
            low, high = base - self.total // 20, base + self.total // 20
            entry[2] = min(max(entry[2] + step, max(0, low)), min(high, self.total))

    def text(self):
        out = []
        for label, width, value, unit in self.lines:
            if width is None:
                out.append(label)
            else:
                out.append(label + str(value).rjust(width) + unit)
        return "\n".join(out) + "\n"


class NetDev:
    """proc/net/dev: two header lines, then `name: 16 counters`."""

    def __init__(self, text):
        lines = text.splitlines()
        self.header = lines[:2]
        self.interfaces = []
        for line in lines[2:]:
            name, _, counters = line.partition(":")
            self.interfaces.append([name.strip(), [int(v) for v in counters.split()]])
        self.rates = {}

    def new_second(self, rng):
        for name, _ in self.interfaces:
            if name == "lo":
                self.rates[name] = (rng.uniform(0, 20e3),) * 2
            else:
                self.rates[name] = (rng.uniform(0, 2e6), rng.uniform(0, 200e3))

    def step(self, rng, fraction):
        for name, c in self.interfaces:
            rx, tx = self.rates[name]
            rx_bytes = int(rx * fraction)
            tx_bytes = int(tx * fraction)
            c[0] += rx_bytes
            c[1] += -(-rx_bytes // rng.randint(900, 1500)) if rx_bytes else 0
            c[8] += tx_bytes
            c[9] += -(-tx_bytes // rng.randint(200, 600)) if tx_bytes else 0

    def text(self):
        fmt = ("%6s: %7d %7d %4d %4d %4d %5d %10d %9d "
               "%8d %7d %4d %4d %4d %5d %7d %10d")
        return "\n".join(self.header + [fmt % tuple([name] + c) for name, c in self.interfaces]) + "\n"


class Diskstats:
    """proc/diskstats: whole disks gain I/O; partitions follow their disk."""

    NVME = re.compile(r"^nvme\d+(c\d+)?n\d+$")
    WHOLE = re.compile(r"^(sd[a-z]+|vd[a-z]+|xvd[a-z]+|hd[a-z]+|mmcblk\d+)$")

    def __init__(self, text):
        self.lines = []
        for line in text.splitlines():
            fields = line.split()
            self.lines.append([int(fields[0]), int(fields[1]), fields[2], [int(v) for v in fields[3:]]])
        self.disks = [l for l in self.lines if self.moves(l)]
        # A partition that carried all of its disk's writes keeps doing so.
        self.twins = {}
        for disk in self.disks:
            for line in self.lines:
                if (line is not disk and line[2].startswith(disk[2])
                        and line[3][6] == disk[3][6] and line[3][6] > 0):
                    self.twins.setdefault(disk[2], []).append(line)
        # Disks that had written the same (an md RAID1 pair) keep doing so.
        self.mirror = {}
        for i, disk in enumerate(self.disks):
            for earlier in self.disks[:i]:
                if earlier[3][6] == disk[3][6] and disk[2] not in self.mirror:
                    self.mirror[disk[2]] = earlier[2]
        self.rates = {}

    def moves(self, line):
        name, counters = line[2], line[3]
        # A multipath head that counts nothing (Linux < 6.2) stays so.
        return (self.NVME.match(name) or self.WHOLE.match(name)) and any(counters)

    def new_second(self, rng):
        for disk in self.disks:
            self.rates[disk[2]] = (rng.uniform(0, 8e6), rng.uniform(0, 6e6))
        for disk, leader in self.mirror.items():
            self.rates[disk] = (self.rates[disk][0], self.rates[leader][1])

    def step(self, rng, fraction):
        for disk in self.disks:
            read_rate, write_rate = self.rates[disk[2]]
            sectors_read = int(read_rate * fraction) // 512
            sectors_written = int(write_rate * fraction) // 512
            reads = -(-sectors_read // 64)
            writes = -(-sectors_written // 32)
            grow = {0: reads, 2: sectors_read, 3: reads // 4 + (1 if reads else 0),
                    4: writes, 6: sectors_written, 7: writes // 2 + (1 if writes else 0)}
            busy_ms = min(int(1000 * fraction), grow[3] + grow[7])
            grow[9] = busy_ms
            grow[10] = grow[3] + grow[7]
            for line in [disk] + self.twins.get(disk[2], []):
                counters = line[3]
                for column, value in grow.items():
                    if column < len(counters):
                        counters[column] += value

    def text(self):
        return "\n".join("%4d %7d %s %s" % (major, minor, name, " ".join(map(str, c)))
                         for major, minor, name, c in self.lines) + "\n"


class Loadavg:
    """proc/loadavg: the kernel's exponentially damped run-queue averages."""

    def __init__(self, text):
        fields = text.split()
        self.load = [float(v) for v in fields[:3]]
        self.total = int(fields[3].split("/")[1])
        self.running = 1
        self.last_pid = int(fields[4])

    def update(self, rng, cpus):
        queue = rng.randint(1, cpus)
        for i, minutes in enumerate((1, 5, 15)):
            e = math.exp(-LOAD_PERIOD / (60 * minutes))
            self.load[i] = self.load[i] * e + queue * (1 - e)
        self.running = rng.randint(1, min(queue, cpus))
        self.total = max(100, self.total + rng.randint(-10, 10))

    def text(self):
        return "%.2f %.2f %.2f %d/%d %d\n" % (*self.load, self.running, self.total, self.last_pid)


class Sockstat:
    """proc/net/sockstat(6): `inuse` of TCP, UDP (and their v6) wander."""

    def __init__(self, text):
        self.lines = [line.split() for line in text.splitlines()]

    def new_second(self, rng):
        for fields in self.lines:
            if fields and fields[0] in ("TCP:", "UDP:", "TCP6:", "UDP6:") and len(fields) > 2:
                chance = 0.5 if fields[0].startswith("TCP") else 0.1
                if rng.random() < chance:
                    value = int(fields[2]) + rng.choice((-2, -1, 1, 2))
                    fields[2] = str(max(1, value))

    def text(self):
        return "\n".join(" ".join(fields) for fields in self.lines) + "\n"


class Mover:
    def __init__(self, root, seed):
        self.root = root
        self.rng = random.Random(seed)
        proc = os.path.join(root, "proc")
        self.paths = {}
        self.state = {}
        for name, kind in (("stat", Stat), ("meminfo", Meminfo), ("net/dev", NetDev),
                           ("diskstats", Diskstats), ("loadavg", Loadavg),
                           ("net/sockstat", Sockstat), ("net/sockstat6", Sockstat)):
            text = read(os.path.join(proc, name))
            if text is not None:
                self.paths[name] = os.path.join(proc, name)
                self.state[name] = kind(text)
        uptime = read(os.path.join(proc, "uptime"))
        self.uptime = float(uptime.split()[0]) if uptime else None
        self.sensors = {}
        for folder, pattern in (("sys/class/hwmon", re.compile(r"^temp\d+_input$")),
                                ("sys/class/thermal", re.compile(r"^temp$"))):
            top = os.path.join(root, folder)
            if not os.path.isdir(top):
                continue
            for entry in sorted(os.listdir(top)):
                chip = os.path.realpath(os.path.join(top, entry))
                if not os.path.isdir(chip):
                    continue
                for name in sorted(os.listdir(chip)):
                    if pattern.match(name):
                        path = os.path.join(chip, name)
                        self.sensors[path] = int(read(path).strip())
        self.proc = proc
        self.pids = sorted(int(n) for n in os.listdir(proc) if n.isdigit())
        loadavg = self.state.get("loadavg")
        self.next_pid = loadavg.last_pid + 1 if loadavg else 1000
        while len(self.pids) < PROCESSES:
            self.spawn()
        self.second = 0

    def spawn(self):
        pid = self.next_pid
        self.next_pid += 1
        os.makedirs(os.path.join(self.proc, str(pid)), exist_ok=True)
        self.pids.append(pid)
        if "loadavg" in self.state:
            self.state["loadavg"].last_pid = pid

    def new_second(self):
        rng = self.rng
        for name in ("stat", "meminfo", "net/dev", "diskstats", "net/sockstat", "net/sockstat6"):
            if name in self.state:
                self.state[name].new_second(rng)
        if "loadavg" in self.state and self.second % int(LOAD_PERIOD) == 0:
            cpus = len(self.state["stat"].cpus) if "stat" in self.state else 1
            self.state["loadavg"].update(rng, cpus)
        for path, value in self.sensors.items():
            if rng.random() < 0.3:
                self.sensors[path] = min(90000, max(35000, value + rng.choice((-1000, 1000))))
        # Processes start and exit; the count wanders around PROCESSES.
        for _ in range(rng.randint(0, 3)):
            self.spawn()
        for _ in range(rng.randint(0, 3)):
            if len(self.pids) > PROCESSES // 2:
                pid = self.pids.pop(rng.randrange(len(self.pids)))
                shutil.rmtree(os.path.join(self.proc, str(pid)), ignore_errors=True)
        self.second += 1

    def step(self, fraction, levels):
        """Moves the counters by `fraction` of a second; rewrites the
        levels (memory, load, sockets, temperatures) when `levels`."""
        rng = self.rng
        for name in ("stat", "net/dev", "diskstats"):
            if name in self.state:
                self.state[name].step(rng, fraction)
                write_atomic(self.paths[name], self.state[name].text())
        if self.uptime is not None:
            self.uptime += fraction
            idle = self.state["stat"].idle_seconds() if "stat" in self.state else 0.0
            write_atomic(os.path.join(self.proc, "uptime"), "%.2f %.2f\n" % (self.uptime, idle))
        if levels:
            for name in ("meminfo", "loadavg", "net/sockstat", "net/sockstat6"):
                if name in self.state:
                    write_atomic(self.paths[name], self.state[name].text())
            for path, value in self.sensors.items():
                write_atomic(path, "%d\n" % value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", help="the copy to move (made with --from)")
    parser.add_argument("--from", dest="source", help="fixture tree to copy to DIR first")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps-per-second", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=3600,
                        help="stop after this long (default 3600)")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    args = parser.parse_args()

    here = os.path.dirname(os.path.abspath(__file__))
    fixtures = os.path.realpath(os.path.join(here, "..", "tests", "fixtures"))
    target = os.path.realpath(args.dir)
    if target == fixtures or target.startswith(fixtures + os.sep):
        sys.exit("fixture-mover: %s is in tests/fixtures; move a copy (--from)" % args.dir)
    if args.source:
        if os.path.exists(args.dir):
            sys.exit("fixture-mover: %s exists; --from copies to a new folder" % args.dir)
        shutil.copytree(args.source, args.dir, symlinks=True)
    if not os.path.isdir(os.path.join(args.dir, "proc")):
        sys.exit("fixture-mover: %s has no proc/" % args.dir)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    mover = Mover(args.dir, args.seed)
    per_second = max(1, args.steps_per_second)
    fraction = 1.0 / per_second
    start = time.monotonic()
    step = 0
    while not stop:
        if step % per_second == 0:
            mover.new_second()
        mover.step(fraction, levels=step % per_second == 0)
        step += 1
        if step == 1:
            # The first rewrite is done: an agent may start now.
            write_atomic(os.path.join(args.dir, ".mover-ready"), "%d\n" % os.getpid())
        if args.steps is not None and step >= args.steps:
            break
        due = start + step * fraction
        if due - start >= args.seconds:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


if __name__ == "__main__":
    main()
