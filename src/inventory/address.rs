//! What `ansible_host` may be: an IP address or a host name (RFC 1123).

use std::net::IpAddr;

/// Why `s` is neither an IP address nor a host name, or None when it is one of them.
pub fn problem(s: &str) -> Option<&'static str> {
    if s.parse::<IpAddr>().is_ok() {
        return None;
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > 253 {
        return Some("a host name has at most 253 characters");
    }
    let labels: Vec<&str> = name.split('.').collect();
    for l in &labels {
        if l.is_empty() || l.len() > 63 {
            return Some("each dot-separated part of a host name has 1 to 63 characters");
        }
        if !l
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Some("a host name has only letters, digits, `-` and `.`");
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Some("a part of a host name cannot start or end with `-`");
        }
    }
    let last = labels[labels.len() - 1];
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Some(
            "it looks like an IPv4 address but is not one (each number is 0 to 255, four of them)",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::problem;

    #[test]
    fn addresses_and_names() {
        for ok in [
            "10.0.0.1",
            "::1",
            "fe80::1",
            "node1",
            "web-01.example.com",
            "host.",
            "a_b.lan",
        ] {
            assert_eq!(problem(ok), None, "{ok}");
        }
        for bad in [
            "999.1.1.1",
            "10.0.0",
            "1.2.3.4.5",
            "",
            "-a",
            "a..b",
            "bad host",
            "h@st",
            "a-.b",
        ] {
            assert!(problem(bad).is_some(), "{bad}");
        }
        assert!(problem(&"a".repeat(64)).is_some());
    }
}
