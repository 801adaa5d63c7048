# The built-in bootstrap + hardening roles of provision, task for task, as a pyinfra
# deploy. Differences are marked "differs:". Run: pyinfra inventory.py deploy.py
import json
from io import StringIO
from pathlib import Path

from pyinfra import host, inventory
from pyinfra.facts.files import File, Directory
from pyinfra.operations import apt, files, server, systemd

HERE = Path(__file__).resolve().parent
hardening = json.loads((HERE.parent / "hardening.json").read_text())["hardening"]
d = host.data
admin_users = d.get("admin_users") or []
chrony_options = d.get("chrony_options") or "-F 1"
timezone = "Etc/UTC"
sshd_file = "/etc/ssh/sshd_config.d/50-provision-hardening.conf"
sysctl_file = "/etc/sysctl.d/90-provision-hardening.conf"

# ---- bootstrap
server.hostname(name="set the hostname from the inventory name", hostname=host.name)

nodes = "".join(f"{h.data.get('ssh_hostname') or h.name} {h.name}\n" for h in inventory)
files.block(
    name="list every cluster node in /etc/hosts",
    path="/etc/hosts",
    content=nodes.rstrip("\n"),
    marker="# {mark} PROVISION CLUSTER NODES",
)

chrony_opts = files.put(
    name="chrony options (before the package, so its first start uses them)",
    src=StringIO(f'# Managed by provision\nDAEMON_OPTS="{chrony_options}"\n'),
    dest="/etc/default/chrony",
    mode="644",
)

# differs: provision runs `apt-get update` only when something is to be installed;
# cache_time is pyinfra's closest (no update on a re-run within the hour).
apt.packages(
    name="packages",
    packages=["sudo", "curl", "ca-certificates", "gnupg", "tzdata", "chrony", "unattended-upgrades"],
    update=True,
    cache_time=3600,
)

files.link(name="time zone", path="/etc/localtime", target=f"/usr/share/zoneinfo/{timezone}")
files.put(name="time zone name", src=StringIO(f"{timezone}\n"), dest="/etc/timezone", mode="644")
systemd.service(name="time sync with chrony", service="chrony", running=True, enabled=True)

# differs: pyinfra's server.user manages the user and its authorized_keys in one operation.
for u in admin_users:
    server.user(
        name=f"admin user {u['name']} and its SSH keys",
        user=u["name"],
        shell=u.get("shell", "/bin/bash"),
        public_keys=u.get("keys") or None,
        delete_keys=True,
    )

# differs: pyinfra's put has no validate; provision and Ansible check with `visudo -cf`.
if admin_users:
    files.put(
        name="admin users may use sudo",
        src=StringIO("# Managed by provision\n" + "".join(f"{u['name']} ALL=(ALL:ALL) NOPASSWD: ALL\n" for u in admin_users)),
        dest="/etc/sudoers.d/provision-admins",
        mode="440",
        user="root",
        group="root",
    )

files.put(
    name="unattended security upgrades",
    src=StringIO('// Managed by provision\nAPT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n'),
    dest="/etc/apt/apt.conf.d/20auto-upgrades",
    mode="644",
)

files.template(
    name="record what provision manages here",
    src=str(HERE.parent.parent.parent / "templates/bootstrap/provision-managed.j2"),
    dest="/etc/provision-managed",
    mode="644",
    inventory_hostname=host.name,
    # pyinfra adds a group named after the inventory file (inventory.py): not an inventory group
    group_names=[g for g in host.groups if g != "inventory"],
)

# ---- hardening
# differs: no `sshd -t`, no proof by a new connection, no rollback (as the Ansible playbook).
sshd = files.put(
    name="sshd settings",
    src=StringIO(hardening["sshd_conf"]),
    dest=sshd_file,
    mode="600",
    user="root",
    group="root",
)

for s in hardening["sysctl"]:
    server.sysctl(name=f"sysctl {s['key']}", key=s["key"], value=s["value"], persist=True, persist_file=sysctl_file)

# differs: provision's file module has `if_exists`; here a File/Directory fact first.
for f in hardening["files"]:
    if f["state"] == "directory":
        if f["if_exists"] and not host.get_fact(Directory, path=f["path"]):
            continue
        files.directory(name=f"permissions of {f['path']}", path=f["path"], mode=f["mode"], user=f["owner"], group=f["group"])
    else:
        if f["if_exists"] and not host.get_fact(File, path=f["path"]):
            continue
        files.file(name=f"permissions of {f['path']}", path=f["path"], mode=f["mode"], user=f["owner"], group=f["group"])

files.directory(name="docker daemon folder", path="/etc/docker", mode="755")
daemon = files.put(
    name="docker daemon settings",
    src=StringIO(json.dumps(hardening["docker"], indent=4, sort_keys=True) + "\n"),
    dest="/etc/docker/daemon.json",
    mode="644",
    user="root",
    group="root",
)

# ---- handlers
server.shell(
    name="restart chrony",
    commands=["if systemctl is-active --quiet chrony; then systemctl restart chrony; fi"],
    _if=chrony_opts.did_change,
)
server.shell(name="reload sshd", commands=["systemctl reload ssh"], _if=sshd.did_change)
server.shell(
    name="restart docker",
    commands=["if systemctl is-active --quiet docker; then systemctl restart docker; fi"],
    _if=daemon.did_change,
)
