//! The lab network: one bridge, a namespace and veth pair per host, and a blackhole
//! policy route so that nothing from the bridge leaves the machine.

use crate::sys::{run, run_quiet};
use anyhow::Result;
use std::net::Ipv4Addr;
use std::process::Command;

pub const BRIDGE: &str = "plab0";
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const TABLE: &str = "7200";

pub fn address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 0, (10 + index) as u8)
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
    let gw = format!("{GATEWAY}/24");
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

pub fn host_up(name: &str, index: usize) -> Result<()> {
    let ns = netns(name);
    let veth = format!("pl-{name}");
    host_down(name);
    run(
        &mut ip(&["netns", "add", &ns]),
        "creating a network namespace",
    )?;
    run(
        &mut ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]),
        "creating a veth pair",
    )?;
    run(
        &mut ip(&["link", "set", &veth, "master", BRIDGE, "up"]),
        "attaching a veth to the bridge",
    )?;
    let addr = format!("{}/24", address(index));
    let gw = GATEWAY.to_string();
    for args in [
        vec!["addr", "add", addr.as_str(), "dev", "eth0"],
        vec!["link", "set", "eth0", "up"],
        vec!["link", "set", "lo", "up"],
        vec!["route", "add", "default", "via", gw.as_str()],
    ] {
        let mut full = vec!["-n", ns.as_str()];
        full.extend(args);
        run(&mut ip(&full), "configuring a host's network")?;
    }
    Ok(())
}

pub fn host_down(name: &str) {
    run_quiet(&mut ip(&["link", "del", &format!("pl-{name}")]));
    run_quiet(&mut ip(&["netns", "del", &netns(name)]));
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
