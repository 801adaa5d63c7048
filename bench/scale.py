#!/usr/bin/env python3
"""provision at 100, 300 and 1,000 light lab hosts, against the floor and the peers.

    python3 bench/scale.py run [--hosts 100,300,1000] [--runs 3] [--peers] [--out FILE]
    python3 bench/scale.py report [FILE]      # markdown tables for docs/benchmarks.md

Not a test and not run in CI: it needs root and the light lab (`lab up N --init
minimal`: tini and sshd, about 3 MB a host). Workloads on the hardening role alone
(the light hosts have no systemd for the other roles): the re-run (`provision -p
hardening.yml` on hosts that already hold it), the audit (`provision audit`), and the
floor: bench/peers/floor.sh (HARDENING_ONLY=1) over one OpenSSH connection per host,
as many at once as provision's default --forks (50). With --peers: pyinfra --dry at
100 and 300 hosts, ansible-playbook --check at 100 (their hardening tasks only). Each
row records wall time, controller CPU (user + system of the tool and its children)
and peak memory (PSS of the tool's processes outside the lab hosts).
"""
import argparse
import concurrent.futures
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare as C  # noqa: E402

SITE = C.PEERS / "provision" / "hardening.yml"
FORKS = 50


def light_lab(n):
    C.stop_masters()
    C.sh(C.BIN, "lab", "down")
    t0 = time.monotonic()
    C.sh(C.BIN, "lab", "up", n, "--init", "minimal")
    up = time.monotonic() - t0
    C.WORK.mkdir(parents=True, exist_ok=True)
    src = (C.LAB / "inventory.yml").read_text()
    (C.WORK / "inventory.yml").write_text(src)
    hosts = re.findall(r"^            (\S+):\n              ansible_host: (\S+)", src, re.M)
    assert len(hosts) == n, f"lab inventory has {len(hosts)} hosts, wanted {n}"
    data = {"ssh_user": "admin", "ssh_key": str(C.LAB / "id_ed25519"),
            "ssh_known_hosts_file": str(C.LAB / "known_hosts"),
            "ssh_strict_host_key_checking": "yes", "_sudo": True}
    lines = [f"    ({name!r}, {{**DATA, 'ssh_hostname': {addr!r}}})," for name, addr in hosts]
    (C.WORK / "inventory.py").write_text(f"DATA = {data!r}\nlab = [\n" + "\n".join(lines) + "\n]\n")
    C.NAMES.clear()
    C.NAMES.update({addr: name for name, addr in hosts})
    return [addr for _, addr in hosts], up


def peer_files():
    """The peers' hardening tasks alone, cut from their bootstrap + hardening files."""
    deploy = (C.PEERS / "pyinfra" / "deploy.py").read_text()
    head = deploy.split("# ---- bootstrap", 1)[0]
    hard = deploy.split("# ---- hardening", 1)[1].split("# ---- handlers", 1)[0]
    (C.WORK / "hardening.py").write_text(
        head.replace('HERE = Path(__file__).resolve().parent', f'HERE = Path({str(C.PEERS / "pyinfra")!r})')
        + "# ---- hardening" + hard)
    site = (C.PEERS / "ansible" / "site.yml").read_text()
    top, rest = site.split("  tasks:\n", 1)
    tasks = rest.split("    # ---- hardening", 1)[1]
    (C.WORK / "hardening.yml").write_text(
        top.replace("../hardening.json", str(C.PEERS / "hardening.json")) + "  tasks:\n    # ---- hardening" + tasks)


def command(tool, workload, n):
    inv = C.WORK / "inventory.yml"
    if tool == "provision" and workload == "audit":
        return [C.BIN, "audit", inv, "-p", SITE, "--output", "json"], None, {0, 5}
    if tool == "provision":
        return [C.BIN, inv, "-p", SITE, "--output", "json"], None, {0}
    if tool == "pyinfra":
        return [C.VENV / "bin" / "pyinfra", "--dry", "--parallel", str(FORKS), C.WORK / "inventory.py",
                C.WORK / "hardening.py"], None, {0}
    if tool == "ansible":
        env = C.ansible_env()
        env["ANSIBLE_FORKS"] = str(FORKS)
        return [C.VENV / "bin" / "ansible-playbook", "-i", inv, C.WORK / "hardening.yml", "--check"], env, {0, 2}
    raise ValueError(tool)


def cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


LAB_CPU = Path("/sys/fs/cgroup/cpuacct/provision-lab/cpuacct.usage")


def lab_cpu():
    """CPU seconds the lab hosts used (their sshd and what it runs): the other side's cost."""
    try:
        return int(LAB_CPU.read_text()) / 1e9
    except (OSError, ValueError):
        return 0.0


def run_tool(tool, workload, n, sample):
    cmd, env, ok = command(tool, workload, n)
    mem = C.Sampler(interval=0.1) if sample else None
    c0, l0, t0 = cpu(), lab_cpu(), time.monotonic()
    p = subprocess.run([str(c) for c in cmd], env=env, text=True, capture_output=True, cwd=C.WORK)
    wall, used = time.monotonic() - t0, cpu() - c0
    run_tool.hosts_cpu = lab_cpu() - l0
    peak = mem.stop() if mem else None
    if p.returncode not in ok:
        log = C.WORK / f"failed-{tool}-{workload}-{n}.log"
        log.write_text(p.stdout + p.stderr)
        raise RuntimeError(f"{tool} {workload} on {n} hosts exited {p.returncode}; output in {log}")
    C.reap()
    return wall, used, peak


def run_floor(addrs, sample):
    """floor.sh (hardening reads only) over OpenSSH, FORKS connections at once."""
    script = (C.PEERS / "floor.sh").read_bytes()
    mem = C.Sampler(interval=0.1) if sample else None

    def one(a):
        p = subprocess.run([str(c) for c in C.floor_cmd(a, True)], input=script, capture_output=True)
        return a, p.returncode

    c0, l0, t0 = cpu(), lab_cpu(), time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(FORKS) as ex:
        bad = [a for a, rc in ex.map(one, addrs) if rc != 0]
    wall, used = time.monotonic() - t0, cpu() - c0
    run_tool.hosts_cpu = lab_cpu() - l0
    peak = mem.stop() if mem else None
    if bad:
        raise RuntimeError(f"floor script failed on {len(bad)} hosts, first {bad[0]}")
    return wall, used, peak


def record(out, **row):
    print(json.dumps(row), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


def bench(n, runs, peers, out, peer_runs=None):
    addrs, up = light_lab(n)
    record(out, tool="lab", workload="up", hosts=n, run=0, wall=up)
    # The hosts hold the hardening role first, so re-runs change nothing.
    wall, used, _ = run_tool("provision", "first", n, False)
    record(out, tool="provision", workload="first", hosts=n, run=0, wall=wall, cpu=used)
    tools = [("provision", "rerun"), ("provision", "audit"), ("floor", "audit")]
    if peers and n <= 300:
        tools.append(("pyinfra", "audit"))
    if peers and n <= 100:
        tools.append(("ansible", "audit"))
    for i in range(runs):
        for tool, workload in tools:
            if tool in ("pyinfra", "ansible") and peer_runs is not None and i >= peer_runs:
                continue
            sample = i == runs - 1
            if tool == "floor":
                wall, used, peak = run_floor(addrs, sample)
            else:
                wall, used, peak = run_tool(tool, workload, n, sample)
            record(out, tool=tool, workload=workload, hosts=n, run=i, wall=wall, cpu=used, peak=peak,
                   hosts_cpu=run_tool.hosts_cpu)
    t0 = time.monotonic()
    C.sh(C.BIN, "lab", "down")
    record(out, tool="lab", workload="down", hosts=n, run=0, wall=time.monotonic() - t0)


def report(path):
    import statistics
    rows = [json.loads(l) for l in open(path)]
    key = lambda r: (r["hosts"], r["tool"], r["workload"])
    groups = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    med = lambda k, f="wall": statistics.median(r[f] for r in groups[k]) if k in groups else None
    peak = lambda k: max((r.get("peak") or 0) for r in groups[k]) / 2**20 if k in groups else None
    print("| hosts | lab up | provision re-run | provision audit | floor | audit ÷ floor | re-run ÷ floor "
          "| pyinfra --dry | ansible --check | provision memory (audit / re-run) | CPU per host: provision / floor's ssh / hosts' sshd (audit) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sorted({r["hosts"] for r in rows if r["hosts"] > 0}):
        a, f, rr = med((n, "provision", "audit")), med((n, "floor", "audit")), med((n, "provision", "rerun"))
        py, an = med((n, "pyinfra", "audit")), med((n, "ansible", "audit"))
        per = lambda k, f: (med(k, f) or 0) / n * 1000
        cpu_host = (f"{per((n, 'provision', 'audit'), 'cpu'):.1f} / {per((n, 'floor', 'audit'), 'cpu'):.1f} / "
                    f"{per((n, 'provision', 'audit'), 'hosts_cpu'):.1f} ms")
        cell = lambda v: f"{v:.2f} s" if v is not None else "-"
        ratio = lambda x, y: f"{x / y:.2f}x" if x and y else "-"
        print(f"| {n} | {cell(med((n, 'lab', 'up')))} | {cell(rr)} | {cell(a)} | {cell(f)} | {ratio(a, f)} | "
              f"{ratio(rr, f)} | {cell(py)}{' (' + ratio(py, a) + ')' if py else ''} | "
              f"{cell(an)}{' (' + ratio(an, a) + ')' if an else ''} | {peak((n, 'provision', 'audit')) or 0:.0f} / {peak((n, 'provision', 'rerun')) or 0:.0f} MB | "
              f"{cpu_host} |")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--hosts", default="100,300,1000")
    r.add_argument("--runs", type=int, default=3)
    r.add_argument("--peers", action="store_true")
    r.add_argument("--peer-runs", type=int, help="runs of pyinfra and Ansible (each takes minutes)")
    r.add_argument("--out", default=str(C.ROOT / "bench" / "results" / f"scale-{time.strftime('%Y-%m-%d')}.jsonl"))
    p = sub.add_parser("report")
    p.add_argument("file", nargs="?", default=str(C.ROOT / "bench" / "results" / f"scale-{time.strftime('%Y-%m-%d')}.jsonl"))
    a = ap.parse_args()
    if a.cmd == "report":
        return report(a.file)
    C.setup()
    C.WORK.mkdir(parents=True, exist_ok=True)
    peer_files()
    record(a.out, tool="versions", workload="-", hosts=0, run=0, wall=0, **C.versions())
    for n in [int(x) for x in a.hosts.split(",")]:
        bench(n, a.runs, a.peers, a.out, a.peer_runs)


if __name__ == "__main__":
    main()
