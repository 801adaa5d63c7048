//! Host patterns as in Ansible's --limit: names, groups, globs, `a:b` (union),
//! `a:&b` (intersection), `a:!b` (exclusion); commas work like colons.

use super::Inventory;
use indexmap::IndexSet;

/// The hosts a pattern selects, in inventory order.
pub fn select(inv: &Inventory, pattern: &str) -> Result<Vec<String>, String> {
    let mut result: IndexSet<String> = IndexSet::new();
    let mut first = true;
    for part in pattern
        .split([',', ':'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (op, term) = match part.as_bytes()[0] {
            b'&' => ('&', &part[1..]),
            b'!' => ('!', &part[1..]),
            _ => ('+', part),
        };
        let hosts = term_hosts(inv, term)?;
        match op {
            '&' => result.retain(|h| hosts.contains(h)),
            '!' => {
                if first {
                    result = inv.hosts.keys().cloned().collect();
                }
                result.retain(|h| !hosts.contains(h))
            }
            _ => result.extend(hosts),
        }
        first = false;
    }
    if first {
        return Err(format!("the pattern `{pattern}` is empty"));
    }
    Ok(inv
        .hosts
        .keys()
        .filter(|h| result.contains(*h))
        .cloned()
        .collect())
}

fn term_hosts(inv: &Inventory, term: &str) -> Result<IndexSet<String>, String> {
    if let Some(g) = inv.groups.get(term) {
        return Ok(g.clone());
    }
    if inv.hosts.contains_key(term) {
        return Ok(IndexSet::from([term.to_owned()]));
    }
    if term.contains(['*', '?', '[']) {
        let pat = glob::Pattern::new(term).map_err(|e| format!("bad glob `{term}`: {e}"))?;
        let mut out: IndexSet<String> = inv
            .hosts
            .keys()
            .filter(|h| pat.matches(h))
            .cloned()
            .collect();
        for (g, members) in &inv.groups {
            if pat.matches(g) {
                out.extend(members.iter().cloned());
            }
        }
        return Ok(out);
    }
    let mut names: Vec<&str> = inv.hosts.keys().map(String::as_str).collect();
    names.extend(inv.groups.keys().map(String::as_str));
    Err(match crate::yaml::closest(term, &names) {
        Some(c) => {
            format!("`{term}` is neither a host nor a group of the inventory; did you mean `{c}`?")
        }
        None => format!("`{term}` is neither a host nor a group of the inventory"),
    })
}
