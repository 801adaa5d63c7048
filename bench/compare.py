#!/usr/bin/env python3
"""provision vs a tuned Ansible vs pyinfra vs the floor, on the same lab hosts.

    python3 bench/compare.py run [--hosts 1,5,20,50] [--runs 5] [--out FILE]
    python3 bench/compare.py report [FILE]      # markdown tables for docs/benchmarks.md

Not a test and not run in CI: it needs root, the lab, and ~1 hour at 50 hosts.
Workloads per host count: first run on fresh hosts (each tool its own fresh lab),
re-run with nothing to change, audit (provision audit / ansible-playbook --check /
pyinfra --dry), and the floor (bench/peers/floor.sh over one OpenSSH connection per
host, all hosts at once). Every first run is verified: `provision --check` must report
0 changes (the peers wrote exactly what provision would) and `provision audit` must
pass. Every re-run must report 0 changes. Results are appended as JSON lines.
"""
import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
VENV = Path("/var/cache/provision-bench/venv")
PINS = ["ansible==12.3.0", "ansible-core==2.19.14", "pyinfra==3.10.0"]
LAB = Path("/var/lib/provision-lab")
WORK = Path("/tmp/provision-bench")
CP_DIR = WORK / "ansible-cp"
BIN = ROOT / "target" / "release" / "provision"


def sh(*cmd, check=True, **kw):
    return subprocess.run([str(c) for c in cmd], check=check, text=True, capture_output=True, **kw)


def setup():
    if not (VENV / "bin" / "pyinfra").exists():
        print("installing", *PINS, "into", VENV, flush=True)
        sh(sys.executable, "-m", "venv", VENV)
        sh(VENV / "bin" / "pip", "install", "-q", *PINS)
    print("building provision (release)", flush=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    # ssh masters that Ansible leaves behind (ControlPersist) re-parent to us, so the
    # memory sampler sees them and they are reaped.
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def versions():
    def first(cmd):
        return sh(*cmd, check=False).stdout.strip().splitlines()[0]
    return {
        "provision": first([BIN, "--version"]),
        "ansible": first([VENV / "bin" / "ansible", "--version"]),
        "pyinfra": first([VENV / "bin" / "pyinfra", "--version"]),
        "openssh": sh("ssh", "-V", check=False).stderr.strip(),
        "python": sys.version.split()[0],
        "cpu": next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
        "cores": os.cpu_count(),
        "kernel": os.uname().release,
    }


# ---------------------------------------------------------------- lab and inventories

def fresh_lab(n):
    stop_masters()
    sh(BIN, "lab", "down")
    sh(BIN, "lab", "up", n)
    WORK.mkdir(parents=True, exist_ok=True)
    src = (LAB / "inventory.yml").read_text()
    key = (LAB / "id_ed25519.pub").read_text().strip()
    inv = src.replace("  vars:\n", f'  vars:\n    admin_users: [{{name: ops, keys: ["{key}"]}}]\n', 1)
    (WORK / "inventory.yml").write_text(inv)
    hosts = re.findall(r"^        (\S+):\n          ansible_host: (\S+)", src, re.M)
    assert len(hosts) == n, f"lab inventory has {len(hosts)} hosts, wanted {n}"
    data = {
        "ssh_user": "admin", "ssh_key": str(LAB / "id_ed25519"),
        "ssh_known_hosts_file": str(LAB / "known_hosts"), "ssh_strict_host_key_checking": "yes",
        "_sudo": True, "chrony_options": "-x", "admin_users": [{"name": "ops", "keys": [key]}],
    }
    lines = [f"    ({name!r}, {{**DATA, 'ssh_hostname': {addr!r}}})," for name, addr in hosts]
    (WORK / "inventory.py").write_text(f"DATA = {data!r}\nlab = [\n" + "\n".join(lines) + "\n]\n")
    return [addr for _, addr in hosts]


def stop_masters():
    subprocess.run(["pkill", "-f", f"ControlPath={CP_DIR}"], capture_output=True)
    subprocess.run(["pkill", "-f", str(CP_DIR)], capture_output=True)
    time.sleep(0.2)
    shutil.rmtree(CP_DIR, ignore_errors=True)
    reap()


def reap():
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


# ---------------------------------------------------------------- tools

def ansible_env():
    env = dict(os.environ, ANSIBLE_CONFIG=str(PEERS / "ansible" / "ansible.cfg"),
               ANSIBLE_SSH_CONTROL_PATH_DIR=str(CP_DIR), ANSIBLE_NOCOLOR="1")
    env["PATH"] = f"{VENV / 'bin'}:{env['PATH']}"
    return env


def command(tool, workload, n):
    inv = WORK / "inventory.yml"
    if tool == "provision":
        site = PEERS / "provision" / "site.yml"
        if workload == "audit":
            return [BIN, "audit", inv, "-p", site, "--output", "json"], None
        return [BIN, inv, "-p", site, "--output", "json"], None
    if tool == "ansible":
        cmd = [VENV / "bin" / "ansible-playbook", "-i", inv, PEERS / "ansible" / "site.yml"]
        return cmd + (["--check"] if workload == "audit" else []), ansible_env()
    if tool == "pyinfra":
        # -y: no prompt; --dry (without -y) detects changes and stops
        flags = ["--dry"] if workload == "audit" else ["-y"]
        return [VENV / "bin" / "pyinfra", *flags, "--parallel", str(max(n, 1)), WORK / "inventory.py",
                PEERS / "pyinfra" / "deploy.py"], None
    raise ValueError(tool)


def changed(tool, workload, out):
    """Changes the tool reports (for audit: what it would change)."""
    if tool == "provision":
        if workload == "audit":
            return sum(1 for l in out.splitlines() if '"pass":false' in l)
        recap = next(json.loads(l) for l in out.splitlines() if '"event":"recap"' in l)
        return sum(h["changed"] for h in recap["hosts"].values())
    if tool == "ansible":
        return sum(int(m) for m in re.findall(r"changed=(\d+)", out))
    if tool == "pyinfra" and workload == "audit":
        # the "Detected changes" table: the Change column, not "Conditional Change" (handlers)
        lines = out.split("Detected changes:", 1)[1].splitlines()[1:]
        col = lines[0].index("Change")
        total = 0
        for l in lines[1:]:
            if not l.strip():
                break
            tok = l[col:].split()[0]
            total += 0 if tok == "-" else int(tok)
        return total
    if tool == "pyinfra":
        m = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", out)
        if not m:
            raise RuntimeError("no pyinfra total in its output")
        return 0 if m.group(2) == "-" else int(m.group(2))
    return 0


def provision_counts(out):
    try:
        recap = next(json.loads(l) for l in out.splitlines() if '"event":"recap"' in l)
        return {"commands_per_host": max(h["commands"] for h in recap["hosts"].values()),
                "connections": recap.get("connections")}
    except StopIteration:
        return {}


def floor_cmd(addr, hardening_only):
    # the key exchange provision's russh negotiates with this sshd (OpenSSH's own first
    # choice, sntrup761x25519, costs more CPU and would make the floor slower than it is)
    return ["ssh", "-F", LAB / "ssh_config", "-o", "ControlMaster=no", "-o", "ControlPath=none",
            "-o", "KexAlgorithms=curve25519-sha256",
            addr_name(addr), f"sudo env HARDENING_ONLY={int(hardening_only)} sh -s"]


NAMES = {}


def addr_name(addr):
    return NAMES[addr]


def run_floor(addrs, hardening_only, sample=False):
    script = (PEERS / "floor.sh").read_bytes()
    mem = Sampler() if sample else None
    t0 = time.monotonic()
    procs = [subprocess.Popen([str(c) for c in floor_cmd(a, hardening_only)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for a in addrs]
    for p in procs:
        p.stdin.write(script)
        p.stdin.close()
    outs = [(p.stdout.read(), p.wait()) for p in procs]
    wall = time.monotonic() - t0
    peak = mem.stop() if mem else None
    bad = [a for a, (o, rc) in zip(addrs, outs) if rc != 0]
    if bad:
        raise RuntimeError(f"floor script failed on {bad}")
    return wall, peak


def cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        return ""


class Sampler:
    """Peak sum of PSS of every process under this one (the tool, its forks, ssh)."""

    def __init__(self, interval=0.02):
        self.peak = 0
        self.me = os.getpid()
        # processes already under us (lab hosts, its package server) are not the tool's;
        # Ansible's ssh masters are, even when a previous run started them
        self.before = {p for p in self.tree() if str(CP_DIR) not in cmdline(p)}
        self.netns = os.readlink("/proc/self/ns/net")
        self.done = threading.Event()
        self.t = threading.Thread(target=self.loop, args=(interval,), daemon=True)
        self.t.start()

    def loop(self, interval):
        while not self.done.is_set():
            self.peak = max(self.peak, self.total())
            time.sleep(interval)

    def tree(self):
        parent = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    stat = open(f"/proc/{d}/stat").read()
                    parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        kids = {self.me}
        changed_ = True
        while changed_:
            changed_ = False
            for pid, pp in parent.items():
                if pp in kids and pid not in kids:
                    kids.add(pid)
                    changed_ = True
        return kids - {self.me}

    def total(self):
        total = 0
        for pid in self.tree() - self.before:
            try:
                # lab hosts descend from us too: their sshd sessions are not the controller's
                if os.readlink(f"/proc/{pid}/ns/net") != self.netns:
                    continue
                for l in open(f"/proc/{pid}/smaps_rollup"):
                    if l.startswith("Pss:"):
                        total += int(l.split()[1]) * 1024
            except OSError:
                pass
        return total

    def stop(self):
        self.done.set()
        self.t.join()
        return self.peak


def run_tool(tool, workload, n, sample=False):
    cmd, env = command(tool, workload, n)
    mem = Sampler() if sample else None
    t0 = time.monotonic()
    p = subprocess.Popen([str(c) for c in cmd], env=env, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, cwd=WORK)
    out, _ = p.communicate()
    wall = time.monotonic() - t0
    peak = mem.stop() if mem else None
    ok_codes = {0, 5} if (tool == "provision" and workload == "audit") else {0}
    if tool == "ansible" and workload == "audit":
        ok_codes = {0, 2}
    if p.returncode not in ok_codes:
        log = WORK / f"failed-{tool}-{workload}-{n}.log"
        log.write_text(out)
        raise RuntimeError(f"{tool} {workload} on {n} hosts exited {p.returncode}; output in {log}")
    reap()
    return wall, peak, out


def verify(tool, n):
    """After a first run: the hosts hold what provision would write, and pass the audit."""
    out = sh(BIN, WORK / "inventory.yml", "--check", "--output", "json", check=False).stdout
    pending = changed("provision", "run", out)
    audit = sh(BIN, "audit", WORK / "inventory.yml", check=False)
    if pending or audit.returncode != 0:
        raise RuntimeError(f"after {tool}'s first run on {n} hosts: provision --check would change "
                           f"{pending} tasks, audit exit {audit.returncode}")


# ---------------------------------------------------------------- the run

def record(out, **row):
    row["at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")
    extra = f" mem={row['peak_mb']:.1f}MB" if row.get("peak_mb") else ""
    print(f"  {row['hosts']:>3} hosts {row['tool']:<9} {row['workload']:<6} {row['wall']:8.2f}s "
          f"changed={row.get('changed', '-')}{extra}", flush=True)


def bench(n, runs, first_runs, tools, out):
    print(f"== {n} hosts", flush=True)
    for tool in tools:
        for i in range(first_runs):
            fresh_lab(n)
            wall, _, o = run_tool(tool, "first", n)
            verify(tool, n)
            extra = provision_counts(o) if tool == "provision" else {}
            record(out, tool=tool, workload="first", hosts=n, run=i, wall=wall,
                   changed=changed(tool, "first", o), **extra)
        if first_runs == 0 and tool == tools[0]:
            fresh_lab(n)  # not timed: the same state every tool writes (verified at other sizes)
            run_tool("provision", "first", n)
            verify("provision", n)
        if first_runs == 0 and tool != "provision":
            # the tool's own first run on these hosts, untimed (pyinfra, say, refreshes the
            # apt cache once when its own stamp is missing): its re-runs follow its run
            run_tool(tool, "first", n)
        # the hosts now hold the settings: re-runs and audits, then one sampled run each
        for workload in ("rerun", "audit"):
            for i in range(runs + 1):
                sample = i == runs
                wall, peak, o = run_tool(tool, workload, n, sample=sample)
                c = changed(tool, workload, o)
                if c:
                    raise RuntimeError(f"{tool} {workload} on {n} hosts reports {c} changes")
                extra = provision_counts(o) if tool == "provision" else {}
                row = dict(tool=tool, workload=workload, hosts=n, run=i, wall=wall, changed=c, **extra)
                if sample:
                    row.update(peak_mb=peak / 2**20, sampled=True)
                record(out, **row)
    # the floor, on hosts that hold the settings (the last tool's)
    NAMES.clear()
    src = (LAB / "inventory.yml").read_text()
    NAMES.update({a: h for h, a in re.findall(r"^        (\S+):\n          ansible_host: (\S+)", src, re.M)})
    for workload, only in (("rerun", False), ("audit", True)):
        for i in range(runs + 1):
            sample = i == runs
            wall, peak = run_floor(list(NAMES), only, sample=sample)
            row = dict(tool="floor", workload=workload, hosts=n, run=i, wall=wall)
            if sample:
                row.update(peak_mb=peak / 2**20, sampled=True)
            record(out, **row)
    stop_masters()


# ---------------------------------------------------------------- the report

def memory(n, tools, out):
    """One sampled re-run and audit per tool on converged hosts, and the floor's."""
    fresh_lab(n)
    run_tool("provision", "first", n)
    verify("provision", n)
    NAMES.clear()
    src = (LAB / "inventory.yml").read_text()
    NAMES.update({a: h for h, a in re.findall(r"^        (\S+):\n          ansible_host: (\S+)", src, re.M)})
    for tool in tools:
        for workload in ("rerun", "audit"):
            wall, peak, o = run_tool(tool, workload, n, sample=True)
            record(out, tool=tool, workload=workload, hosts=n, run=-1, wall=wall,
                   changed=changed(tool, workload, o), peak_mb=peak / 2**20, sampled=True)
    for workload, only in (("rerun", False), ("audit", True)):
        wall, peak = run_floor(list(NAMES), only, sample=True)
        record(out, tool="floor", workload=workload, hosts=n, run=-1, wall=wall,
               peak_mb=peak / 2**20, sampled=True)
    stop_masters()


def report(path):
    rows = [json.loads(l) for l in open(path)]
    meta = next((r for r in rows if r.get("versions")), None)
    rows = [r for r in rows if "workload" in r]
    ns = sorted({r["hosts"] for r in rows})
    tools = ["provision", "ansible", "pyinfra", "floor"]

    def times(tool, wl, n):
        return [r["wall"] for r in rows if (r["tool"], r["workload"], r["hosts"]) == (tool, wl, n)
                and not r.get("sampled")]

    def cell(ts):
        if not ts:
            return "–"
        return f"{statistics.median(ts):.2f} ({min(ts):.2f}–{max(ts):.2f})"

    if meta:
        v = meta["versions"]
        print(f"Machine: {v['cpu']}, {v['cores']} cores, Linux {v['kernel']}. "
              f"{v['provision']}; {v['ansible']}; {v['pyinfra']}; {v['openssh']}; Python {v['python']}.\n")
    names = {"first": "First run on fresh hosts", "rerun": "Re-run, nothing to change",
             "audit": "Audit (provision audit / ansible-playbook --check / pyinfra --dry)"}
    for wl in ("first", "rerun", "audit"):
        print(f"### {names[wl]}\n")
        print("Wall seconds, median (min–max) of n runs; ratio = peer median / provision median.\n")
        print("| hosts | runs (p/A/py/f) | provision | Ansible | pyinfra | floor | Ansible ÷ provision | "
              "pyinfra ÷ provision | provision ÷ floor |")
        print("|---:|---:|---|---|---|---|---:|---:|---:|")
        for n in ns:
            t = {tool: times(tool, wl, n) for tool in tools}
            med = {k: statistics.median(v) for k, v in t.items() if v}
            p = med.get("provision")

            def ratio(a, b):
                return f"{a / b:.1f}x" if a and b else "–"
            counts = "/".join(str(len(t[k])) for k in tools)
            print(f"| {n} | {counts} | {cell(t['provision'])} | {cell(t['ansible'])} | "
                  f"{cell(t['pyinfra'])} | {cell(t['floor'])} | {ratio(med.get('ansible'), p)} | "
                  f"{ratio(med.get('pyinfra'), p)} | {ratio(p, med.get('floor'))} |")
        print()
    print("### Controller memory (peak PSS of the tool and every process under it, MB; the last sampled run)\n")
    print("| hosts | workload | provision | Ansible | pyinfra | floor (all ssh clients) |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in ns:
        for wl in ("rerun", "audit"):
            m = {r["tool"]: r["peak_mb"] for r in rows
                 if r.get("sampled") and r["hosts"] == n and r["workload"] == wl}
            print(f"| {n} | {wl} | " + " | ".join(f"{m[t]:.1f}" if t in m else "–" for t in tools) + " |")
    print("\n### provision's round trips\n")
    print("| hosts | workload | remote commands per host | SSH connections |")
    print("|---:|---|---:|---:|")
    for n in ns:
        for wl in ("first", "rerun"):
            r = next((r for r in rows if (r["tool"], r["workload"], r["hosts"]) == ("provision", wl, n)
                      and "commands_per_host" in r), None)
            if r:
                print(f"| {n} | {wl} | {r['commands_per_host']} | {r['connections']} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--hosts", default="1,5,20,50")
    r.add_argument("--runs", type=int, default=5)
    r.add_argument("--first-runs", type=int, help="timed first runs per tool (default: --runs; "
                   "0: converge once with provision, untimed)")
    r.add_argument("--tools", default="provision,ansible,pyinfra")
    r.add_argument("--out", default=str(ROOT / "bench" / "results.jsonl"))
    m = sub.add_parser("memory", help="only the sampled runs (controller memory)")
    m.add_argument("--hosts", default="1,5,20")
    m.add_argument("--tools", default="provision,ansible,pyinfra")
    m.add_argument("--out", default=str(ROOT / "bench" / "results.jsonl"))
    p = sub.add_parser("report")
    p.add_argument("file", nargs="?", default=str(ROOT / "bench" / "results.jsonl"))
    a = ap.parse_args()
    if a.cmd == "report":
        return report(a.file)
    if os.geteuid() != 0:
        sys.exit("the lab needs root: run as root")
    setup()
    with open(a.out, "a") as f:
        f.write(json.dumps({"versions": versions(), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        if a.cmd == "memory":
            for n in [int(x) for x in a.hosts.split(",")]:
                memory(n, a.tools.split(","), a.out)
            return
        for n in [int(x) for x in a.hosts.split(",")]:
            first = a.runs if a.first_runs is None else a.first_runs
            bench(n, a.runs, first, a.tools.split(","), a.out)
    finally:
        stop_masters()


if __name__ == "__main__":
    main()
