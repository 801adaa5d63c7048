//! The lab network: one bridge, a namespace and veth pair per host, and a blackhole
//! policy route so that nothing from the bridge leaves the machine.

use crate::sys::{run, run_quiet};
use anyhow::Result;
use std::net::Ipv4Addr;
use std::process::Command;

pub const BRIDGE: &str = "plab0";
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const TABLE: &str = "7200";

/// The lab's network is 10.200.0.0/16 (a /24 holds only 253 hosts): host i is
/// 10.200.0.(10+i) up to node245, then on through 10.200.1.x and so on.
pub const PREFIX: u8 = 16;

pub fn address(index: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + 10 + index as u32)
}

pub fn netns(name: &str) -> String {
    format!("plab-{name}")
}

fn ip(args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(args);
    c
}

pub fn bridge_up() -> Result<()> {
    if !run_quiet(&mut ip(&["link", "show", BRIDGE])) {
        run(
            &mut ip(&["link", "add", BRIDGE, "type", "bridge"]),
            "creating the lab bridge",
        )?;
    }
    let gw = format!("{GATEWAY}/{PREFIX}");
    let shown = run(
        &mut ip(&["-4", "addr", "show", "dev", BRIDGE]),
        "reading the bridge",
    )?;
    if !String::from_utf8_lossy(&shown.stdout).contains(&gw) {
        run(
            &mut ip(&["addr", "add", &gw, "dev", BRIDGE]),
            "addressing the lab bridge",
        )?;
    }
    run(
        &mut ip(&["link", "set", BRIDGE, "up"]),
        "starting the lab bridge",
    )?;
    let rules = run(&mut ip(&["rule", "show"]), "reading policy rules")?;
    if !String::from_utf8_lossy(&rules.stdout).contains(&format!("iif {BRIDGE} lookup {TABLE}")) {
        run(
            &mut ip(&[
                "rule", "add", "iif", BRIDGE, "lookup", TABLE, "priority", "7200",
            ]),
            "adding the lab's blackhole rule",
        )?;
    }
    run(
        &mut ip(&["route", "replace", "blackhole", "default", "table", TABLE]),
        "adding the lab's blackhole route",
    )?;
    Ok(())
}

pub fn bridge_down() {
    while run_quiet(&mut ip(&["rule", "del", "iif", BRIDGE, "lookup", TABLE])) {}
    run_quiet(&mut ip(&["route", "flush", "table", TABLE]));
    run_quiet(&mut ip(&["link", "del", BRIDGE]));
}

/// Runs `ip -batch` with `cmds` (one per line), in namespace `ns` when given: two
/// processes per host instead of seven, which matters at a thousand hosts.
fn ip_batch(ns: Option<&str>, cmds: &str, what: &str) -> Result<()> {
    use std::io::Write;
    let mut c = Command::new("ip");
    if let Some(n) = ns {
        c.args(["-n", n]);
    }
    let mut child = c
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(cmds.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

pub fn host_up(name: &str, index: usize) -> Result<()> {
    let ns = netns(name);
    let veth = format!("pl-{name}");
    host_down(name);
    ip_batch(
        None,
        &format!(
            "netns add {ns}\nlink add {veth} type veth peer name eth0 netns {ns}\nlink set {veth} master {BRIDGE} up\n"
        ),
        "creating a host's namespace and veth pair",
    )?;
    ip_batch(
        Some(&ns),
        &format!(
            "addr add {}/{PREFIX} dev eth0\nlink set eth0 up\nlink set lo up\nroute add default via {GATEWAY}\n",
            address(index)
        ),
        "configuring a host's network",
    )
}

pub fn host_down(name: &str) {
    use std::io::Write;
    // -force: go on past what is already gone; one process for both.
    if let Ok(mut child) = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        if let Some(mut i) = child.stdin.take() {
            let _ = write!(i, "link del pl-{name}\nnetns del {}\n", netns(name));
        }
        let _ = child.wait();
    }
}

/// Lab namespaces present on the machine, whatever the state file says.
pub fn leftover_hosts() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| n.strip_prefix("plab-"))
        .map(str::to_owned)
        .collect()
}
