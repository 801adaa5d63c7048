//! The nft text of a host's firewall: deterministic, so an unchanged inventory gives the
//! same file byte for byte. Loading it replaces provision's table in one transaction.

use super::{Proto, Rule, Wanted, TABLE};
use ipnet::IpNet;
use std::fmt::Write;

fn ports(r: &Rule) -> String {
    let one = |(a, b): &(u16, u16)| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        }
    };
    match r.ports.as_slice() {
        [p] => one(p),
        ps => format!(
            "{{ {} }}",
            ps.iter().map(one).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn set(nets: &[&IpNet]) -> String {
    match nets {
        [n] => n.to_string(),
        ns => format!(
            "{{ {} }}",
            ns.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `match` for the rule's protocol and ports, e.g. `tcp dport 2377`.
fn matcher(r: &Rule, dport: &str) -> String {
    match r.proto {
        Proto::Esp => "meta l4proto esp".to_owned(),
        p => format!("{} {dport} {}", p.name(), ports(r)),
    }
}

/// One line per address family the sources have (one line when anyone may connect).
fn lines(out: &mut String, r: &Rule, what: &str, verdict: &str) {
    let comment = r.comment.replace('"', "'");
    if r.from.is_empty() {
        let _ = writeln!(out, "\t\t{what} {verdict} comment \"{comment}\"");
        return;
    }
    let v4: Vec<&IpNet> = r
        .from
        .iter()
        .filter(|n| matches!(n, IpNet::V4(_)))
        .collect();
    let v6: Vec<&IpNet> = r
        .from
        .iter()
        .filter(|n| matches!(n, IpNet::V6(_)))
        .collect();
    for (fam, nets) in [("ip", v4), ("ip6", v6)] {
        if !nets.is_empty() {
            let _ = writeln!(
                out,
                "\t\t{fam} saddr {} {what} {verdict} comment \"{comment}\"",
                set(&nets)
            );
        }
    }
}

pub fn render(w: &Wanted, host: &str) -> String {
    let mut s = format!(
        "# provision's firewall for {host}, made from the inventory: change the inventory, not this file.\n\
         # Loading it replaces only the `inet {TABLE}` table; Docker's and fail2ban's tables stay.\n\
         table inet {TABLE} {{}}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy drop;\n\
         \t\tct state established,related accept\n\
         \t\tct state invalid drop\n\
         \t\tiifname \"lo\" accept\n\
         \t\tmeta l4proto {{ icmp, ipv6-icmp }} accept\n\
         \t\tiifname {{ \"docker0\", \"docker_gwbridge\" }} accept comment \"containers to this host\"\n"
    );
    for r in &w.raw {
        let _ = writeln!(s, "\t\t{r}");
    }
    for r in &w.input {
        lines(&mut s, r, &matcher(r, "dport"), "accept");
    }
    s += "\t}\n";
    if !w.published.is_empty() {
        s += "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n";
        for r in &w.published {
            let m = format!(
                "ct state new ct status dnat meta l4proto {} ct original proto-dst {}",
                r.proto.name(),
                ports(r)
            );
            lines(&mut s, r, &m, "accept");
            let comment = r.comment.replace('"', "'");
            let _ = writeln!(s, "\t\t{m} drop comment \"{comment}: others\"");
        }
        s += "\t}\n";
    }
    s += "}\n";
    s
}
