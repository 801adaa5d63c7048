//! One cgroup per lab host in every hierarchy, so a host is killed and removed as one.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The directory under which this machine's lab hosts live, one per hierarchy.
pub fn lab_roots() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let v2_only = text.lines().count() == 1;
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            let mount = match ctrls {
                "" if v2_only => PathBuf::from("/sys/fs/cgroup"),
                "" => PathBuf::from("/sys/fs/cgroup/unified"),
                c => PathBuf::from("/sys/fs/cgroup").join(c.strip_prefix("name=").unwrap_or(c)),
            };
            let root = mount
                .join(path.trim_start_matches('/'))
                .join("provision-lab");
            mount.is_dir().then_some(root)
        })
        .collect()
}

/// Creates the host's cgroups and returns their `cgroup.procs` files.
pub fn create(host: &str) -> Result<Vec<PathBuf>> {
    let mut procs = Vec::new();
    for root in lab_roots() {
        let dir = root.join(host);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating cgroup {}", dir.display()))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            for d in [&root, &dir] {
                let f = d.join(file);
                if f.exists()
                    && std::fs::read_to_string(&f)
                        .unwrap_or_default()
                        .trim()
                        .is_empty()
                {
                    let parent = d.parent().map(|p| p.join(file)).unwrap_or_default();
                    let v = std::fs::read_to_string(parent).unwrap_or_default();
                    std::fs::write(&f, v.trim())
                        .with_context(|| format!("writing {}", f.display()))?;
                }
            }
        }
        procs.push(dir.join("cgroup.procs"));
    }
    Ok(procs)
}

/// Every process in the host's cgroups, nested ones included.
pub fn pids(host: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for root in lab_roots() {
        collect(&root.join(host), &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn collect(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for sub in subdirs(dir) {
        collect(&sub, out);
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the host's cgroups, deepest first. Returns false if any is left.
pub fn remove(host: &str) -> bool {
    let mut ok = true;
    for root in lab_roots() {
        ok &= remove_tree(&root.join(host));
    }
    ok
}

fn remove_tree(dir: &Path) -> bool {
    if !dir.exists() {
        return true;
    }
    for sub in subdirs(dir) {
        remove_tree(&sub);
    }
    std::fs::remove_dir(dir).is_ok()
}

/// Removes the lab's parent cgroups once no host is left in them.
pub fn remove_roots() {
    for root in lab_roots() {
        let _ = std::fs::remove_dir(root);
    }
}

/// Host names that still have a cgroup.
pub fn leftover_hosts() -> Vec<String> {
    let mut names: Vec<String> = lab_roots()
        .iter()
        .flat_map(|r| subdirs(r))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Memory used by the host, where the memory controller is available.
pub fn memory_bytes(host: &str) -> Option<u64> {
    lab_roots().iter().find_map(|root| {
        let dir = root.join(host);
        ["memory.usage_in_bytes", "memory.current"]
            .iter()
            .find_map(|f| {
                std::fs::read_to_string(dir.join(f))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            })
    })
}
