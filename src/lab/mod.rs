//! `provision lab`: real SSH hosts on this machine (network namespaces, overlay root
//! filesystems over a cached Debian image, systemd as PID 1).

mod cgroup;
pub mod image;
mod net;
pub mod registry;
mod showcase;
pub use showcase::where_to_look;

use crate::sys::{require_tool, run, run_quiet, write_atomic};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use net::address;

const HOST_SCRIPT: &str = include_str!("host.sh");
const REPO_PORT: u16 = 8089;

/// Where the lab keeps its state, keys and client files.
pub fn default_dir() -> PathBuf {
    std::env::var_os("PROVISION_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/lib/provision-lab".into())
}

/// Where the lab caches its images (outside any repository).
pub fn default_cache() -> PathBuf {
    std::env::var_os("PROVISION_LAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/provision-lab".into())
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct HostState {
    pub name: String,
    pub address: String,
    pub pid: i32,
    pub loopdev: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct LabState {
    pub size: usize,
    pub disk: Option<String>,
    /// Hosts without the cluster packages, as fresh servers.
    #[serde(default)]
    pub fresh: bool,
    pub repo_pid: i32,
    /// The lab's container registry (`--registry`), 0 when there is none.
    #[serde(default)]
    pub registry_pid: i32,
    /// Light hosts (`--init minimal`): tini and sshd, no systemd.
    #[serde(default)]
    pub minimal: bool,
    pub hosts: Vec<HostState>,
}

pub struct Lab {
    pub dir: PathBuf,
    pub cache: PathBuf,
}

pub fn host_name(i: usize) -> String {
    format!("node{i}")
}

impl Lab {
    pub fn new(dir: PathBuf, cache: PathBuf) -> Self {
        Lab { dir, cache }
    }

    pub fn inventory(&self) -> PathBuf {
        self.dir.join("inventory.yml")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    fn state_file(&self) -> PathBuf {
        self.dir.join("lab.json")
    }
    fn host_dir(&self, name: &str) -> PathBuf {
        self.dir.join("hosts").join(name)
    }

    pub fn state(&self) -> Option<LabState> {
        let text = std::fs::read_to_string(self.state_file()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Starts `size` hosts, building the image first if needed.
    // Long on purpose: the lab's start-up sequence, in the order it happens.
    pub fn up(
        &self,
        size: usize,
        disk: Option<&str>,
        fresh: bool,
        registry: bool,
        minimal: bool,
        log: &mut dyn FnMut(&str),
    ) -> Result<LabState> {
        preflight(registry)?;
        let most = if minimal { MAX_LIGHT } else { MAX_SYSTEMD };
        if !(1..=most).contains(&size) {
            bail!(
                "a lab has 1 to {most} {} hosts, not {size}{}",
                if minimal { "light" } else { "systemd" },
                if minimal {
                    ""
                } else {
                    " (light hosts, `--init minimal`, go to 1000)"
                }
            );
        }
        let disk_bytes = disk.map(parse_size).transpose()?;
        if let Some(st) = self.state() {
            if st.hosts.iter().all(|h| alive(h.pid)) {
                if st.size == size
                    && st.disk.as_deref() == disk
                    && st.fresh == fresh
                    && st.minimal == minimal
                    && (st.registry_pid > 0) == registry
                {
                    log(&format!("lab already up with {size} hosts"));
                    return Ok(st);
                }
                bail!(
                    "a lab with {} {}hosts{} is already up; run `provision lab down` first",
                    st.size,
                    if st.fresh { "fresh " } else { "" },
                    st.disk
                        .as_ref()
                        .map(|d| format!(" and {d} disks"))
                        .unwrap_or_default()
                );
            }
        }
        self.down(&mut |_| {})?;
        if !minimal {
            inotify_room(size, log)?;
        }
        neighbour_room(size, log)?;
        let image = image::ensure(&self.cache, log)?;
        std::fs::create_dir_all(&self.dir)?;
        self.client_keypair()?;
        let start = Instant::now();
        net::bridge_up()?;
        let repo_pid = spawn_detached(
            Command::new("python3")
                .args([
                    "-m",
                    "http.server",
                    &REPO_PORT.to_string(),
                    "--bind",
                    &net::GATEWAY.to_string(),
                    "--directory",
                ])
                .arg(&image.repo),
            &self.dir.join("repo.log"),
        )?;
        let mut registry_pid = 0;
        if registry {
            let rdir = self.dir.join("registry");
            registry::certs(&rdir)?;
            let data = self.cache.join("registry-data");
            std::fs::create_dir_all(&data)?;
            let cfg = registry::config(&rdir, &data, false)?;
            registry::auth_password(&rdir)?;
            let cfg_auth = registry::config(&rdir, &data, true)?;
            registry::port_free()?;
            registry_pid = spawn_detached(
                Command::new("docker-registry").arg("serve").arg(&cfg),
                &self.dir.join("registry.log"),
            )?;
            let auth_pid = spawn_detached(
                Command::new("docker-registry").arg("serve").arg(&cfg_auth),
                &self.dir.join("registry-auth.log"),
            )?;
            registry::wait_up(&registry::address(), 15)?;
            registry::wait_up(&registry::auth_address(), 15)?;
            for (pid, log) in [
                (registry_pid, "registry.log"),
                (auth_pid, "registry-auth.log"),
            ] {
                if !alive(pid) {
                    bail!(
                        "the lab registry stopped right after starting: see {}",
                        self.dir.join(log).display()
                    );
                }
            }
            registry::push_images(&self.cache, &rdir, log)?;
            log(&format!(
                "registry on {} (TLS, lab CA trusted by the hosts): {}; the same images on {} for user `{}`, password in {}",
                registry::address(),
                registry::image_names().join(" "),
                registry::auth_address(),
                registry::AUTH_USER,
                rdir.join("password").display()
            ));
        }
        let script = self.dir.join("host.sh");
        write_atomic(&script, HOST_SCRIPT.as_bytes(), 0o755)?;
        let mut state = LabState {
            size,
            disk: disk.map(str::to_owned),
            fresh,
            repo_pid,
            registry_pid,
            minimal,
            hosts: Vec::new(),
        };
        // Hosts start in parallel (a thousand one by one take minutes).
        let root = if fresh || minimal {
            &image.fresh
        } else {
            &image.rootfs
        };
        let next = std::sync::atomic::AtomicUsize::new(1);
        let slots: Vec<std::sync::Mutex<Option<Result<HostState>>>> =
            (0..=size).map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|sc| {
            for _ in 0..8 {
                sc.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i > size {
                        break;
                    }
                    let r = self.start_host(&host_name(i), i, root, &script, disk_bytes, minimal);
                    if let Ok(mut slot) = slots[i].lock() {
                        *slot = Some(r);
                    }
                });
            }
        });
        let mut failed = None;
        for (i, slot) in slots.into_iter().enumerate().skip(1) {
            match slot.into_inner().ok().flatten() {
                Some(Ok(h)) => state.hosts.push(h),
                Some(Err(e)) => {
                    failed.get_or_insert(e.context(format!("starting lab host {}", host_name(i))));
                }
                None => {
                    failed.get_or_insert(anyhow::anyhow!(
                        "lab host {} was not started",
                        host_name(i)
                    ));
                }
            }
        }
        if let Some(e) = failed {
            let _ = self.save(&state);
            let _ = self.down(&mut |_| {});
            return Err(e);
        }
        self.save(&state)?;
        self.wait_ssh(&state, Duration::from_secs(90 + size as u64 / 10))?;
        log(&format!(
            "{size} hosts answer SSH after {:.1} s",
            start.elapsed().as_secs_f64()
        ));
        self.write_client_files(&state)?;
        Ok(state)
    }

    fn save(&self, state: &LabState) -> Result<()> {
        write_atomic(
            &self.state_file(),
            serde_json::to_string_pretty(state)?.as_bytes(),
            0o644,
        )
    }

    fn client_keypair(&self) -> Result<()> {
        let key = self.client_key();
        if !key.exists() {
            require_tool("ssh-keygen", "openssh-client")?;
            run(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "provision-lab", "-f"])
                    .arg(&key),
                "generating the lab's client key",
            )?;
        }
        Ok(())
    }

    fn start_host(
        &self,
        name: &str,
        index: usize,
        rootfs: &Path,
        script: &Path,
        disk: Option<u64>,
        minimal: bool,
    ) -> Result<HostState> {
        let dir = self.host_dir(name);
        for sub in ["upper", "work", "root", "docker", "keys"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        self.write_identity(name, &dir, rootfs)?;
        let loopdev = match disk {
            Some(bytes) => {
                let file = dir.join("disk.img");
                let f = std::fs::File::create(&file)?;
                f.set_len(bytes)?;
                let out = run(
                    Command::new("losetup").args(["-f", "--show"]).arg(&file),
                    "attaching a loop device",
                )?;
                Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
            }
            None => None,
        };
        let procs = cgroup::create(name)?;
        let list: Vec<String> = procs.iter().map(|p| p.display().to_string()).collect();
        std::fs::write(dir.join("cgroups"), list.join("\n"))?;
        net::host_up(name, index)?;
        let mut cmd = Command::new(script);
        cmd.arg("1").arg(name).arg(rootfs).arg(&dir);
        cmd.arg(loopdev.as_deref().unwrap_or(""));
        cmd.arg(if minimal { "minimal" } else { "systemd" });
        let pid = spawn_detached(&mut cmd, &dir.join("console.log"))?;
        Ok(HostState {
            name: name.into(),
            address: address(index).to_string(),
            pid,
            loopdev,
        })
    }

    /// Hostname, host keys (made once, kept across restarts) and authorized keys.
    fn write_identity(&self, name: &str, dir: &Path, lower: &Path) -> Result<()> {
        let keys = dir.join("keys");
        let hostkey = keys.join("ssh_host_ed25519_key");
        if !hostkey.exists() {
            run(
                Command::new("ssh-keygen")
                    .args([
                        "-q",
                        "-t",
                        "ed25519",
                        "-N",
                        "",
                        "-C",
                        &format!("root@{name}"),
                        "-f",
                    ])
                    .arg(&hostkey),
                "generating a host key",
            )?;
        }
        let up = dir.join("upper");
        let put = |rel: &str, data: &[u8], mode: u32, owner: (u32, u32)| -> Result<()> {
            let path = up.join(rel);
            mkdirs_like(&up, lower, Path::new(rel).parent().unwrap_or(Path::new("")))?;
            write_atomic(&path, data, mode)?;
            std::os::unix::fs::chown(&path, Some(owner.0), Some(owner.1))?;
            Ok(())
        };
        // The lab registry's CA, trusted by docker for that registry only.
        if let Ok(ca) = std::fs::read(self.dir.join("registry/ca.crt")) {
            for a in [registry::address(), registry::auth_address()] {
                put(
                    &format!("etc/docker/certs.d/{a}/ca.crt"),
                    &ca,
                    0o644,
                    (0, 0),
                )?;
            }
        }
        put(
            "etc/hostname",
            format!("{name}\n").as_bytes(),
            0o644,
            (0, 0),
        )?;
        put(
            "etc/hosts",
            format!("127.0.0.1 localhost\n127.0.1.1 {name}\n").as_bytes(),
            0o644,
            (0, 0),
        )?;
        let machine_id = std::fs::read_to_string("/proc/sys/kernel/random/uuid")?
            .trim()
            .replace('-', "");
        put(
            "etc/machine-id",
            format!("{machine_id}\n").as_bytes(),
            0o444,
            (0, 0),
        )?;
        put(
            "etc/ssh/ssh_host_ed25519_key",
            &std::fs::read(&hostkey)?,
            0o600,
            (0, 0),
        )?;
        put(
            "etc/ssh/ssh_host_ed25519_key.pub",
            &std::fs::read(hostkey.with_extension("pub"))?,
            0o644,
            (0, 0),
        )?;
        let client = std::fs::read(self.client_key().with_extension("pub"))?;
        put("root/.ssh/authorized_keys", &client, 0o600, (0, 0))?;
        let (uid, gid) = user_ids(lower, image::ADMIN_USER)?;
        let home = format!("home/{}", image::ADMIN_USER);
        mkdirs_like(&up, lower, Path::new(&home))?;
        let ssh_dir = up.join(&home).join(".ssh");
        std::fs::create_dir_all(&ssh_dir)?;
        std::fs::set_permissions(
            &ssh_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        std::os::unix::fs::chown(&ssh_dir, Some(uid), Some(gid))?;
        put(
            &format!("{home}/.ssh/authorized_keys"),
            &client,
            0o600,
            (uid, gid),
        )?;
        Ok(())
    }

    fn wait_ssh(&self, state: &LabState, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let mut pending: Vec<&HostState> = state.hosts.iter().collect();
        while !pending.is_empty() {
            pending.retain(|h| !ssh_ready(&h.address));
            if pending.is_empty() {
                break;
            }
            if let Some(dead) = pending.iter().find(|h| !alive(h.pid)) {
                bail!(
                    "lab host {} stopped while booting; its console log is {}",
                    dead.name,
                    self.host_dir(&dead.name).join("console.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "lab host {} did not answer SSH within {} s; see {}",
                    pending[0].name,
                    limit.as_secs(),
                    self.host_dir(&pending[0].name)
                        .join("console.log")
                        .display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn write_client_files(&self, state: &LabState) -> Result<()> {
        let mut known = String::new();
        let mut config = String::new();
        // A small swarm: one manager (three from five hosts), the rest workers; light
        // hosts (no systemd) are only in the `lab` group.
        let managers = if state.minimal {
            state.hosts.len()
        } else if state.hosts.len() >= 5 {
            3
        } else {
            1
        };
        let (mut mgrs, mut workers, mut osds) = (String::new(), String::new(), String::new());
        for (i, h) in state.hosts.iter().enumerate() {
            let pubkey = std::fs::read_to_string(
                self.host_dir(&h.name).join("keys/ssh_host_ed25519_key.pub"),
            )?;
            let key: Vec<&str> = pubkey.split_whitespace().take(2).collect();
            known += &format!("{} {}\n", h.address, key.join(" "));
            config += &format!(
                "Host {n}\n  HostName {a}\n  User {u}\n  IdentityFile {k}\n  IdentitiesOnly yes\n  \
                 UserKnownHostsFile {kh}\n  StrictHostKeyChecking yes\n  BatchMode yes\n\n",
                n = h.name, a = h.address, u = image::ADMIN_USER,
                k = self.client_key().display(), kh = self.known_hosts().display()
            );
            let mut line = format!(
                "            {}:\n              ansible_host: {}\n",
                h.name, h.address
            );
            if let Some(l) = &h.loopdev {
                line += &format!("              lab_disk: {l}\n");
                osds += &format!("        {}: {{ ceph_osd_devices: [{l}] }}\n", h.name);
            }
            if i < managers {
                mgrs += &line;
            } else {
                workers += &line;
            }
        }
        write_atomic(&self.known_hosts(), known.as_bytes(), 0o644)?;
        write_atomic(&self.ssh_config(), config.as_bytes(), 0o644)?;
        let inv = format!(
            "# Written by `provision lab up`: the lab's {} hosts.\nall:\n  vars:\n    ansible_user: {}\n    ansible_become: true\n    \
             ansible_ssh_private_key_file: {}\n    known_hosts_file: {}\n    \
             # lab hosts share this machine's clock: chrony must not set it\n    chrony_options: \"-x\"\n  children:\n    lab:\n      children:\n        {}:\n          hosts:\n{}{}",
            state.size, image::ADMIN_USER, self.client_key().display(), self.known_hosts().display(),
            if state.minimal { "light" } else { "managers" }, mgrs,
            if workers.is_empty() { String::new() } else { format!("        workers:\n          hosts:\n{workers}") }
        );
        let mut inv = inv;
        if !osds.is_empty() {
            // With disks, a Ceph OSD on each (monitors, managers and MDSs on the managers).
            inv = inv.replacen(
                "  children:\n",
                "    # Ceph on the lab's loop devices; this machine's disk is often under 30 % free\n    \
                 ceph_allow_loop_devices: true\n    ceph_conf: { mon_data_avail_warn: 5, osd_memory_target: 939524096 }\n  children:\n",
                1,
            );
            inv += &format!("    ceph_osds:\n      hosts:\n{osds}");
        }
        write_atomic(&self.inventory(), inv.as_bytes(), 0o644)?;
        Ok(())
    }

    /// Stops every host and removes everything the lab made, also after a killed run.
    pub fn down(&self, log: &mut dyn FnMut(&str)) -> Result<()> {
        let state = self.state();
        let mut names: Vec<String> = state
            .iter()
            .flat_map(|s| s.hosts.iter().map(|h| h.name.clone()))
            .collect();
        names.extend(net::leftover_hosts());
        names.extend(cgroup::leftover_hosts());
        names.sort();
        names.dedup();
        if let Some(st) = &state {
            kill(st.repo_pid, libc::SIGTERM);
            kill(st.registry_pid, libc::SIGTERM);
        }
        for pid in pids_with_cmdline("docker-registry serve") {
            kill(pid, libc::SIGTERM);
        }
        let _ = std::fs::remove_dir_all(self.dir.join("registry"));
        for pid in pids_with_cmdline(&format!("--bind {} --directory", net::GATEWAY)) {
            kill(pid, libc::SIGTERM);
        }
        // Ask every systemd to power off, then kill what is left.
        for name in &names {
            for pid in cgroup::pids(name) {
                if is_init(pid) {
                    kill(pid, libc::SIGRTMIN() + 4);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while names.iter().any(|n| !cgroup::pids(n).is_empty()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        // Host by host, in parallel: a thousand one after the other take minutes.
        let left = std::sync::Mutex::new(Vec::new());
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..8 {
                sc.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(name) = names.get(i) else { break };
                    kill_left(name);
                    if !cgroup::remove(name) {
                        if let Ok(mut l) = left.lock() {
                            l.push(format!("cgroup of {name}"));
                        }
                    }
                    net::host_down(name);
                    let dir = self.host_dir(name);
                    if dir.join("disk.img").exists() {
                        detach_loops(&dir);
                    }
                    for sub in ["upper", "work", "root", "docker", "disk.img"] {
                        let p = dir.join(sub);
                        if p.is_dir() {
                            let _ = std::fs::remove_dir_all(&p);
                        } else {
                            let _ = std::fs::remove_file(&p);
                        }
                    }
                });
            }
        });
        let left = left.into_inner().unwrap_or_default();
        if !names.is_empty() {
            log(&format!("stopped {} lab hosts", names.len()));
        }
        cgroup::remove_roots();
        net::bridge_down();
        let _ = std::fs::remove_file(self.state_file());
        if !left.is_empty() {
            bail!("could not remove: {}", left.join(", "));
        }
        Ok(())
    }

    /// Powers one host off (systemd first, then SIGKILL) and keeps its disk, upper dir,
    /// docker dir and loop device, as a server that was shut down.
    pub fn stop_host(&self, node: &str, log: &mut dyn FnMut(&str)) -> Result<()> {
        self.find_host(node)?;
        for pid in cgroup::pids(node) {
            if is_init(pid) {
                kill(pid, libc::SIGRTMIN() + 4);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cgroup::pids(node).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        kill_left(node);
        if !cgroup::pids(node).is_empty() {
            bail!("lab host {node} did not stop");
        }
        cgroup::remove(node);
        net::host_down(node);
        log(&format!("{node} stopped (disk and files kept)"));
        Ok(())
    }

    /// Boots a stopped host again with what it had (its files, docker data, loop device).
    pub fn start_host_again(&self, node: &str, log: &mut dyn FnMut(&str)) -> Result<()> {
        let (mut st, i) = self.find_host(node)?;
        // Its cgroup, not its old pid: a pid is reused once the host is gone.
        if !cgroup::pids(node).is_empty() {
            bail!("lab host {node} is running; `provision lab stop {node}` first");
        }
        let image = image::ensure(&self.cache, log)?;
        let root = if st.fresh || st.minimal {
            &image.fresh
        } else {
            &image.rootfs
        };
        let h = st.hosts[i].clone();
        let index = i + 1;
        let procs = cgroup::create(node)?;
        let list: Vec<String> = procs.iter().map(|p| p.display().to_string()).collect();
        let dir = self.host_dir(node);
        std::fs::write(dir.join("cgroups"), list.join("\n"))?;
        let _ = std::fs::remove_dir_all(dir.join("work"));
        std::fs::create_dir_all(dir.join("work"))?;
        net::host_up(node, index)?;
        let mut cmd = Command::new(self.dir.join("host.sh"));
        cmd.arg("1").arg(node).arg(root).arg(&dir);
        cmd.arg(h.loopdev.as_deref().unwrap_or(""));
        cmd.arg(if st.minimal { "minimal" } else { "systemd" });
        st.hosts[i].pid = spawn_detached(&mut cmd, &dir.join("console.log"))?;
        self.save(&st)?;
        let one = LabState {
            hosts: vec![st.hosts[i].clone()],
            ..st.clone()
        };
        self.wait_ssh(&one, Duration::from_secs(90))?;
        // sshd answers before boot ends; users may log in once systemd removes /run/nologin.
        if st.minimal {
            log(&format!("{node} started again"));
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ok = Command::new("ssh")
                .arg("-F")
                .arg(self.ssh_config())
                .args(["-o", "ConnectTimeout=3", node, "test ! -e /run/nologin"])
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!("lab host {node} answers SSH but did not finish booting within 120 s (logins refused)");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        log(&format!("{node} started again and booted"));
        Ok(())
    }

    /// A new machine under the same name and address: powered off, its files, docker
    /// data and host key gone, the start of its disk zeroed, booted from the image. The
    /// lab's known_hosts takes its new key (an operator accepting a replaced machine's key
    /// on purpose).
    pub fn reinstall_host(&self, node: &str, log: &mut dyn FnMut(&str)) -> Result<()> {
        let (st, i) = self.find_host(node)?;
        if !cgroup::pids(node).is_empty() {
            self.stop_host(node, log)?;
        }
        let dir = self.host_dir(node);
        for sub in ["upper", "work", "docker", "keys"] {
            let _ = std::fs::remove_dir_all(dir.join(sub));
            std::fs::create_dir_all(dir.join(sub))?;
        }
        if let Some(l) = &st.hosts[i].loopdev {
            run(
                Command::new("dd").args([
                    "if=/dev/zero",
                    &format!("of={l}"),
                    "bs=1M",
                    "count=64",
                    "oflag=direct",
                    "status=none",
                ]),
                "zeroing the disk",
            )?;
        }
        let image = image::ensure(&self.cache, log)?;
        let root = if st.fresh || st.minimal {
            &image.fresh
        } else {
            &image.rootfs
        };
        self.write_identity(node, &dir, root)?;
        self.write_client_files(&st)?;
        log(&format!("{node} reinstalled: new host key, blank disk"));
        self.start_host_again(node, log)
    }

    fn find_host(&self, node: &str) -> Result<(LabState, usize)> {
        let Some(st) = self.state() else {
            bail!("no lab is up: run `provision lab up` first")
        };
        match st.hosts.iter().position(|h| h.name == node) {
            Some(i) => Ok((st, i)),
            None => {
                let names: Vec<&str> = st.hosts.iter().map(|h| h.name.as_str()).collect();
                bail!("no lab host `{node}`; the lab has {}", names.join(", "))
            }
        }
    }

    pub fn status(&self) -> Vec<(HostState, bool, bool, Option<u64>)> {
        let Some(st) = self.state() else {
            return Vec::new();
        };
        st.hosts
            .into_iter()
            .map(|h| {
                let up = alive(h.pid);
                let ssh = up && ssh_ready(&h.address);
                let mem = cgroup::memory_bytes(&h.name);
                (h, up, ssh, mem)
            })
            .collect()
    }

    /// Replaces this process with `ssh` to a lab host.
    pub fn ssh(&self, node: &str, cmd: &[String]) -> Result<std::convert::Infallible> {
        use std::os::unix::process::CommandExt;
        let Some(st) = self.state() else {
            bail!("no lab is up: run `provision lab up` first")
        };
        if !st.hosts.iter().any(|h| h.name == node) {
            let names: Vec<&str> = st.hosts.iter().map(|h| h.name.as_str()).collect();
            bail!("no lab host `{node}`; the lab has {}", names.join(", "));
        }
        let err = Command::new("ssh")
            .arg("-F")
            .arg(self.ssh_config())
            .arg(node)
            .args(cmd)
            .exec();
        Err(err).context("running ssh (install it with `apt-get install openssh-client`)")
    }
}

/// Where the lab's own package installs write apt's output.
const APT_LOG: &str = "/var/log/provision-lab-apt.log";

fn install(packages: &[&str], log: &Path) -> Result<()> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let apt = |args: &[&str]| -> Result<bool> {
        Ok(Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out.try_clone()?)
            .status()
            .map(|s| s.success())
            .unwrap_or(false))
    };
    eprintln!(
        "lab: updating the package lists (apt's output: {})",
        log.display()
    );
    let updated = apt(&["update"])?;
    for p in packages {
        eprintln!("lab: installing {p}");
        if !updated || !apt(&["install", "-y", p])? {
            bail!(
                "the lab needs {p} and apt-get could not install it (see {}): install it with `apt-get install {p}`",
                log.display()
            );
        }
    }
    Ok(())
}

fn preflight(registry: bool) -> Result<()> {
    if !cfg!(target_os = "linux") {
        bail!("the lab needs Linux (network namespaces, overlayfs, cgroups)");
    }
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab needs root (it creates network namespaces, mounts and cgroups): run it with sudo");
    }
    let tools = [
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
        ("losetup", "mount"),
        ("ssh-keygen", "openssh-client"),
        ("python3", "python3"),
        ("debootstrap", "debootstrap"),
    ];
    let extra: &[(&str, &str)] = if registry {
        &[("docker-registry", "docker-registry"), ("skopeo", "skopeo")]
    } else {
        &[]
    };
    let tools: Vec<(&str, &str)> = tools.iter().chain(extra).copied().collect();
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(t, _)| require_tool(t, "").is_err())
        .map(|(_, p)| *p)
        .collect();
    // On Debian, as root, the lab installs what it lacks itself: one line per package,
    // apt's own output in a log file.
    if !missing.is_empty() && std::path::Path::new("/etc/debian_version").exists() {
        install(&missing, Path::new(APT_LOG))?;
    }
    for (tool, pkg) in &tools {
        require_tool(tool, pkg)?;
    }
    Ok(())
}

/// Every systemd host holds several inotify instances, all counted against root: the
/// machine's default limit (128) leaves the hosts of a large lab without a working
/// systemd. Raised (never lowered) for the lab's size, and said so.
/// Most systemd hosts (each 20-30 MB) and most light hosts (the bridge takes 1024 ports).
pub const MAX_SYSTEMD: usize = 200;
pub const MAX_LIGHT: usize = 1000;

/// The machine talks to every lab host over the bridge: its neighbour table (1024
/// entries by default, garbage-collected from 512) must hold them all. Raised, never
/// lowered, for a large lab, and said so.
fn neighbour_room(size: usize, log: &mut dyn FnMut(&str)) -> Result<()> {
    if size < 400 {
        return Ok(());
    }
    for (key, want) in [
        ("gc_thresh1", size / 2),
        ("gc_thresh2", size * 2),
        ("gc_thresh3", size * 4),
    ] {
        let path = format!("/proc/sys/net/ipv4/neigh/default/{key}");
        let now: usize = std::fs::read_to_string(&path)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(usize::MAX);
        if now < want {
            std::fs::write(&path, want.to_string())
                .with_context(|| format!("raising {path} to {want} for {size} lab hosts"))?;
            log(&format!(
                "raised net.ipv4.neigh.default.{key} from {now} to {want} for {size} hosts"
            ));
        }
    }
    Ok(())
}

fn inotify_room(size: usize, log: &mut dyn FnMut(&str)) -> Result<()> {
    const KEY: &str = "/proc/sys/fs/inotify/max_user_instances";
    let Ok(now) = std::fs::read_to_string(KEY) else {
        return Ok(());
    };
    let now: usize = now.trim().parse().unwrap_or(usize::MAX);
    let want = 16 * size + 128;
    if now < want {
        std::fs::write(KEY, want.to_string())
            .with_context(|| format!("raising {KEY} to {want} for {size} lab hosts"))?;
        log(&format!(
            "raised fs.inotify.max_user_instances from {now} to {want} for {size} systemd hosts"
        ));
    }
    Ok(())
}

fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| {
        anyhow::anyhow!("--disk `{s}` is not a size: use a number with K, M, G or T, like 10G")
    })?;
    n.checked_mul(mult)
        .filter(|b| *b >= 1 << 20)
        .ok_or_else(|| anyhow::anyhow!("--disk `{s}` must be between 1M and 16E"))
}

fn spawn_detached(cmd: &mut Command, log: &Path) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", crate::sys::describe(cmd)))?;
    Ok(child.id() as i32)
}

/// SIGKILL to what is left of a host, for up to 5 s.
fn kill_left(name: &str) {
    for _ in 0..50 {
        let pids = cgroup::pids(name);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            kill(pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn alive(pid: i32) -> bool {
    pid > 0
        && Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn kill(pid: i32, sig: i32) {
    if pid > 0 {
        unsafe { libc::kill(pid, sig) };
    }
}

/// True for a process that is PID 1 of its own pid namespace.
fn is_init(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .map(|l| l.trim_end().ends_with("\t1"))
        .unwrap_or(false)
}

fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

fn detach_loops(dir: &Path) {
    let Ok(out) = Command::new("losetup")
        .args(["-j"])
        .arg(dir.join("disk.img"))
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(dev) = line.split(':').next() {
            run_quiet(Command::new("losetup").args(["-d", dev]));
        }
    }
}

fn ssh_ready(address: &str) -> bool {
    let Ok(addr) = format!("{address}:22").parse::<SocketAddr>() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-")
}

/// Creates `rel` under `upper`, each directory with the owner and mode it has in `lower`.
fn mkdirs_like(upper: &Path, lower: &Path, rel: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut cur = PathBuf::new();
    for part in rel.components() {
        cur.push(part);
        let (u, l) = (upper.join(&cur), lower.join(&cur));
        if !u.exists() {
            std::fs::create_dir(&u).with_context(|| format!("creating {}", u.display()))?;
            if let Ok(m) = std::fs::metadata(&l) {
                std::fs::set_permissions(&u, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
                std::os::unix::fs::chown(&u, Some(m.uid()), Some(m.gid()))?;
            }
        }
    }
    Ok(())
}

fn user_ids(root: &Path, user: &str) -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd"))?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == user)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .with_context(|| format!("user {user} is missing from the lab image"))
}
