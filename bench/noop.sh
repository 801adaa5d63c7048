#!/usr/bin/env bash
# 100 tasks whose state is already right, on N lab hosts (default 5): wall time,
# remote commands (round trips) per host and SSH connections. Not a test: run on demand.
#   bash bench/noop.sh [HOSTS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=${1:-5}
runs=${2:-5}
cargo build --release --quiet
bin=target/release/provision
$bin lab up "$hosts" >/dev/null
inv=/var/lib/provision-lab/inventory.yml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/roles/noop/tasks"
{
    for i in $(seq 1 100); do
        case $((i % 4)) in
        0) printf -- '- name: dir %s\n  file: {path: /var/tmp/bench/d%s, state: directory, mode: "0755"}\n' "$i" "$i" ;;
        1) printf -- '- name: file %s\n  copy: {dest: /var/tmp/bench/f%s, content: "file %s\\n"}\n' "$i" "$i" "$i" ;;
        2) printf -- '- name: line %s\n  lineinfile: {path: /var/tmp/bench/lines, line: "line %s", create: true}\n' "$i" "$i" ;;
        3) printf -- '- name: sysctl %s\n  sysctl: {name: net.ipv4.conf.all.accept_redirects, value: "0"}\n' "$i" ;;
        esac
    done
} > "$work/roles/noop/tasks/main.yml"
sed -i '1i - name: bench folder\n  file: {path: /var/tmp/bench, state: directory}' "$work/roles/noop/tasks/main.yml"
printf -- '- hosts: all\n  roles: [noop]\n' > "$work/site.yml"
run() { $bin "$inv" -p "$work/site.yml" --roles "$work/roles" --output json; }
run >/dev/null # converge
times=()
for _ in $(seq 1 "$runs"); do
    start=$(date +%s.%N)
    out=$(run)
    end=$(date +%s.%N)
    times+=("$(echo "$end - $start" | bc)")
done
recap=$(echo "$out" | grep '"event":"recap"')
changed=$(echo "$recap" | python3 -c 'import json,sys; r=json.load(sys.stdin)["hosts"]; print(sum(h["changed"] for h in r.values()))')
cmds=$(echo "$recap" | python3 -c 'import json,sys; r=json.load(sys.stdin)["hosts"]; print(max(h["commands"] for h in r.values()))')
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(echo "$sorted" | sed -n "$(((runs + 1) / 2))p")
echo "hosts=$hosts tasks=101 runs=$runs changed=$changed"
echo "wall: median ${median}s min $(echo "$sorted" | head -1)s max $(echo "$sorted" | tail -1)s"
conns=$(echo "$recap" | python3 -c 'import json,sys; print(json.load(sys.stdin)["connections"])')
echo "remote commands (round trips) per host: $cmds; SSH connections: $conns for $hosts hosts"
