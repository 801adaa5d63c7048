//! The firewall in `provision audit`: the file against the inventory, the live table
//! against what provision loaded (a port opened by hand shows here), and fail2ban's jail.

use super::TABLE;
use crate::finding::Finding;
use crate::transport::quote;

pub fn script(file: &str, fail2ban: bool) -> String {
    let f = quote(file);
    let l = quote(&format!("{file}.loaded"));
    let mut s = format!(
        "echo '==PROVISION fw-file'; cat {f} 2>/dev/null; echo '==PROVISION fw-loaded'; cat {l} 2>/dev/null; \
         echo '==PROVISION fw-live'; nft list table inet {TABLE} 2>/dev/null; true\n"
    );
    if fail2ban {
        s += "echo '==PROVISION fw-f2b'; fail2ban-client status sshd 2>&1; true\n";
    }
    s
}

fn section<'a>(out: &'a str, name: &str) -> &'a str {
    let start = format!("==PROVISION {name}\n");
    let Some(i) = out.find(&start) else {
        return "";
    };
    let rest = &out[i + start.len()..];
    match rest.find("\n==PROVISION fw-") {
        Some(j) => &rest[..=j],
        None => rest,
    }
}

/// Lines in `b` and not in `a` (+), and the other way round (-), at most `max`.
fn changes(a: &str, b: &str, max: usize) -> String {
    let d = similar::TextDiff::from_lines(a, b);
    let mut v: Vec<String> = d
        .iter_all_changes()
        .filter(|c| c.tag() != similar::ChangeTag::Equal)
        .map(|c| {
            let sign = if c.tag() == similar::ChangeTag::Insert {
                "+"
            } else {
                "-"
            };
            format!("{sign} {}", c.value().trim())
        })
        .filter(|l| l.len() > 2)
        .collect();
    let more = v.len().saturating_sub(max);
    v.truncate(max);
    if more > 0 {
        v.push(format!("(and {more} more)"));
    }
    v.join("; ")
}

fn finding(
    id: &str,
    title: &str,
    reason: &str,
    pass: bool,
    expected: &str,
    actual: String,
) -> Finding {
    Finding {
        id: id.into(),
        title: title.into(),
        reason: reason.into(),
        pass,
        expected: expected.into(),
        actual,
    }
}

pub fn findings(wanted: &str, out: &str, fail2ban: bool) -> Vec<Finding> {
    let file = section(out, "fw-file");
    let loaded = section(out, "fw-loaded");
    let live = section(out, "fw-live");
    let mut f = vec![finding(
        "firewall-rules",
        "firewall rules match the inventory",
        "the file is what the host loads at boot; it must be what the inventory says",
        file == wanted,
        "the rules the inventory gives this host",
        if file.is_empty() {
            "no rules file: the firewall was never set up on this host".into()
        } else {
            changes(wanted, file, 6)
        },
    )];
    f.push(finding(
        "firewall-live",
        &format!("table inet {TABLE} is loaded, unchanged"),
        "everything else inbound is dropped only while the table is loaded; rules added by hand open ports nobody reviewed",
        !live.trim().is_empty() && live == loaded,
        "the table provision loaded, nothing added or removed",
        if live.trim().is_empty() {
            "not loaded: the host accepts every connection".into()
        } else {
            changes(loaded, live, 6)
        },
    ));
    if fail2ban {
        let s = section(out, "fw-f2b");
        let banned: Vec<&str> = s
            .lines()
            .find_map(|l| l.split_once("Banned IP list:"))
            .map(|(_, ips)| ips.split_whitespace().collect())
            .unwrap_or_default();
        let running = s.contains("Status for the jail: sshd");
        f.push(finding(
            "intrusion-sshd",
            &format!("fail2ban guards SSH ({} address(es) banned)", banned.len()),
            "repeated failed logins from one address are blocked for firewall_ban_time",
            running,
            "the sshd jail running",
            if running {
                format!(
                    "banned: {}",
                    if banned.is_empty() {
                        "none".into()
                    } else {
                        banned.join(" ")
                    }
                )
            } else {
                format!(
                    "the sshd jail is not running: {}",
                    crate::sys::tail(s.trim(), 2)
                )
            },
        ));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_opened_by_hand_is_named() {
        let wanted = "table inet provision {}\n";
        let loaded = "table inet provision {\n\tchain input {\n\t\ttcp dport 22 accept\n\t}\n}\n";
        let live = loaded.replace("accept\n", "accept\n\t\ttcp dport 8080 accept\n");
        let out = format!(
            "==PROVISION fw-file\n{wanted}==PROVISION fw-loaded\n{loaded}==PROVISION fw-live\n{live}==PROVISION fw-f2b\nStatus for the jail: sshd\n   `- Banned IP list:\t10.0.0.7 10.0.0.8\n"
        );
        let f = findings(wanted, &out, true);
        assert!(f[0].pass, "{:?}", f[0].actual);
        assert!(!f[1].pass);
        assert_eq!(f[1].actual, "+ tcp dport 8080 accept");
        assert!(
            f[2].pass && f[2].actual == "banned: 10.0.0.7 10.0.0.8",
            "{}",
            f[2].actual
        );
        assert!(f[2].title.contains("2 address"));
        let none = findings(
            wanted,
            "==PROVISION fw-file\n==PROVISION fw-loaded\n==PROVISION fw-live\n",
            false,
        );
        assert!(!none[0].pass && !none[1].pass && none.len() == 2);
        assert!(none[1].actual.contains("accepts every connection"));
    }
}
