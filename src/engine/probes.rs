//! Batched probes: the read-only probes of the tasks ahead are sent in one remote
//! command, and each task then finds its probe's output here instead of asking again.
//! Results are keyed by (become user, script text), so a task that renders differently
//! by the time it runs simply misses; any change on the host empties the cache.

use crate::transport::{Conn, Output};
use std::collections::HashMap;

/// Probes per batch; bounds the size of one command.
pub const MAX_BATCH: usize = 200;

#[derive(Default)]
pub struct ProbeCache {
    /// Filled since the last change on the host.
    pub fresh: bool,
    map: HashMap<(Option<String>, String), Output>,
}

impl ProbeCache {
    pub fn get(&self, user: Option<&str>, script: &str) -> Option<Output> {
        self.map
            .get(&(user.map(str::to_owned), script.to_owned()))
            .cloned()
    }

    /// Something changed on the host: every probe result may be stale.
    pub fn invalidate(&mut self) {
        self.fresh = false;
        self.map.clear();
    }

    /// Runs the probes as one command per become user; on any trouble keeps nothing
    /// for that user (its tasks then probe alone).
    pub async fn fill(&mut self, conn: &Conn, probes: Vec<(Option<String>, String)>) {
        self.fresh = true;
        let mut by_user: Vec<(Option<String>, Vec<String>)> = Vec::new();
        for (user, script) in probes {
            let i = match by_user.iter().position(|(u, _)| *u == user) {
                Some(i) => i,
                None => {
                    by_user.push((user, Vec::new()));
                    by_user.len() - 1
                }
            };
            if !by_user[i].1.contains(&script) {
                by_user[i].1.push(script);
            }
        }
        for (user, unique) in by_user {
            self.fill_one(conn, user.as_deref(), unique).await;
        }
    }

    async fn fill_one(&mut self, conn: &Conn, user: Option<&str>, unique: Vec<String>) {
        if unique.len() < 2 {
            return; // one probe costs the same alone
        }
        let marker = format!("--provision-probe-{:016x}--", rand_u64());
        let script = batch_script(&unique, &marker);
        let Ok(out) = conn.run("exec sh -s", Some(script.as_bytes()), user).await else {
            return;
        };
        if out.rc != 0 {
            return;
        }
        if let Some(results) = split(&out.stdout, &marker, unique.len()) {
            for (s, o) in unique.into_iter().zip(results) {
                self.map.insert((user.map(str::to_owned), s), o);
            }
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// Each probe in its own subshell, stdin closed, followed by a marker line with its exit code.
pub fn batch_script(scripts: &[String], marker: &str) -> String {
    let mut s = String::new();
    for p in scripts {
        s += &format!("( {p}\n) </dev/null 2>/dev/null; printf '\\n%s %d\\n' '{marker}' $?\n");
    }
    s
}

/// Cuts the batch output back into one Output per probe.
pub fn split(out: &str, marker: &str, n: usize) -> Option<Vec<Output>> {
    let sep = format!("\n{marker} ");
    let mut rest = out;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let i = rest.find(&sep)?;
        let stdout = rest[..i].to_owned();
        let after = &rest[i + sep.len()..];
        let nl = after.find('\n')?;
        let rc = after[..nl].trim().parse().ok()?;
        v.push(Output {
            rc,
            stdout,
            stderr: String::new(),
        });
        rest = &after[nl + 1..];
    }
    rest.is_empty().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_output_splits_back_exactly() {
        let scripts = vec![
            "printf 'a\\nb'".to_string(),
            "echo x; exit 3".into(),
            "true".into(),
        ];
        let m = "--m--";
        let script = batch_script(&scripts, m);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let v = split(&String::from_utf8_lossy(&out.stdout), m, 3).unwrap();
        assert_eq!((v[0].stdout.as_str(), v[0].rc), ("a\nb", 0));
        assert_eq!((v[1].stdout.as_str(), v[1].rc), ("x\n", 3));
        assert_eq!((v[2].stdout.as_str(), v[2].rc), ("", 0));
        assert!(split("garbage", m, 1).is_none());
        assert!(split(&String::from_utf8_lossy(&out.stdout), m, 2).is_none());
    }
}
