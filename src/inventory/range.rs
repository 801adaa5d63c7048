//! Host ranges as Ansible writes them: `web[01:10]`, `db-[a:c]`, `n[1:9:2]`.

const MAX_HOSTS: usize = 10_000;

/// Expands every `[start:end(:step)]` in `name`; a name without brackets is itself.
pub fn expand(name: &str) -> Result<Vec<String>, String> {
    let Some(open) = name.find('[') else {
        return Ok(vec![name.to_owned()]);
    };
    let close = name[open..]
        .find(']')
        .map(|i| open + i)
        .ok_or_else(|| format!("`{name}`: `[` without `]`"))?;
    let (head, spec, tail) = (&name[..open], &name[open + 1..close], &name[close + 1..]);
    let parts: Vec<&str> = spec.split(':').collect();
    let (start, end, step) = match parts.as_slice() {
        [a, b] => (*a, *b, 1),
        [a, b, s] => (
            *a,
            *b,
            s.parse::<usize>()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| format!("`{name}`: the step `{s}` must be a positive number"))?,
        ),
        _ => {
            return Err(format!(
                "`{name}`: a range is written [start:end] or [start:end:step]"
            ))
        }
    };
    let items: Vec<String> = match (start.parse::<u64>(), end.parse::<u64>()) {
        (Ok(a), Ok(b)) if a <= b => {
            let width = if start.starts_with('0') && start.len() > 1 {
                start.len()
            } else {
                0
            };
            if (b - a) as usize / step >= MAX_HOSTS {
                return Err(format!("`{name}` gives more than {MAX_HOSTS} hosts"));
            }
            (a..=b)
                .step_by(step)
                .map(|i| format!("{i:0width$}"))
                .collect()
        }
        (Ok(_), Ok(_)) => return Err(format!("`{name}`: the range starts after it ends")),
        _ => {
            let (a, b) = (start.as_bytes(), end.as_bytes());
            if a.len() != 1
                || b.len() != 1
                || !a[0].is_ascii_alphabetic()
                || !b[0].is_ascii_alphabetic()
                || a[0] > b[0]
            {
                return Err(format!(
                    "`{name}`: a range is of numbers ([01:10]) or single letters ([a:f])"
                ));
            }
            (a[0]..=b[0])
                .step_by(step)
                .map(|c| (c as char).to_string())
                .collect()
        }
    };
    let mut out = Vec::new();
    for i in items {
        for rest in expand(tail)? {
            out.push(format!("{head}{i}{rest}"));
            if out.len() > MAX_HOSTS {
                return Err(format!("`{name}` gives more than {MAX_HOSTS} hosts"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn ranges() {
        assert_eq!(expand("web").unwrap(), ["web"]);
        assert_eq!(expand("web[01:03]").unwrap(), ["web01", "web02", "web03"]);
        assert_eq!(
            expand("n[1:5:2].lan").unwrap(),
            ["n1.lan", "n3.lan", "n5.lan"]
        );
        assert_eq!(expand("db-[a:c]").unwrap(), ["db-a", "db-b", "db-c"]);
        assert_eq!(
            expand("r[1:2]c[a:b]").unwrap(),
            ["r1ca", "r1cb", "r2ca", "r2cb"]
        );
        assert_eq!(expand("w[8:10]").unwrap(), ["w8", "w9", "w10"]);
        for bad in [
            "w[1:",
            "w[3:1]",
            "w[1:2:0]",
            "w[a:3]",
            "w[1]",
            "w[0:99999999]",
        ] {
            assert!(expand(bad).is_err(), "{bad}");
        }
    }
}
