//! The controller's state directory (default `.provision/` beside the inventory, 0700):
//! what must survive between runs, such as the root CA. Files are written atomically;
//! a lock keeps two runs against the same inventory from changing state or hosts at once.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub struct State {
    pub dir: PathBuf,
    /// Held for the whole run (released by the kernel if the process dies).
    _lock: Option<File>,
}

/// `.provision/` beside the inventory.
pub fn default_dir(inventory: &Path) -> PathBuf {
    inventory
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .join(".provision")
}

impl State {
    /// Opens (creating it, 0700) and locks the state directory for a run that changes hosts.
    pub fn lock(dir: &Path) -> Result<State, String> {
        fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the state directory {}: {e}", dir.display()))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        let path = dir.join("lock");
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut written = String::new();
                let _ = f.read_to_string(&mut written);
                // The kernel's word on who holds it now; the file may name an earlier run.
                let holder = live_holder(&path).unwrap_or_else(|| written.trim().to_owned());
                return Err(format!(
                    "another provision run holds {} ({holder}): wait for it to finish; \
                     a run that died releases the lock by itself",
                    path.display(),
                ));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", path.display()))
            }
        }
        let _ = f.set_len(0);
        let _ = f.rewind();
        let _ = writeln!(f, "{}", holder());
        Ok(State {
            dir: dir.to_owned(),
            _lock: Some(f),
        })
    }

    /// The state directory for reading only (check mode, audit, status): not created, not locked.
    pub fn read_only(dir: &Path) -> State {
        State {
            dir: dir.to_owned(),
            _lock: None,
        }
    }

    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        fs::read(self.dir.join(name)).ok()
    }

    pub fn remove(&self, name: &str) -> Result<(), String> {
        fs::remove_file(self.dir.join(name)).map_err(|e| format!("cannot remove {name}: {e}"))
    }

    /// Writes `name` atomically (temp file in the same folder, fsync, rename) with `mode`.
    pub fn write(&self, name: &str, bytes: &[u8], mode: u32) -> Result<(), String> {
        if self._lock.is_none() {
            return Err(format!(
                "internal error: {} written while opened read-only",
                name
            ));
        }
        let path = self.dir.join(name);
        let parent = path.parent().unwrap_or(&self.dir);
        let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        fs::create_dir_all(parent).map_err(err)?;
        let mut t = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(fs::Permissions::from_mode(mode))
            .tempfile_in(parent)
            .map_err(err)?;
        t.write_all(bytes).map_err(err)?;
        t.as_file().sync_all().map_err(err)?;
        t.persist(&path).map_err(|e| err(e.error))?;
        Ok(())
    }
}

/// The process holding a flock on `path` now, from /proc/locks: pid, command line, user
/// and start time.
pub fn live_holder(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let ino = fs::metadata(path).ok()?.ino();
    let locks = fs::read_to_string("/proc/locks").ok()?;
    let pid: u32 = locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF"
        let i = f.iter().position(|w| *w == "FLOCK")?;
        let dev_ino = f.get(i + 4)?;
        (dev_ino.rsplit(':').next()?.parse::<u64>().ok()? == ino)
            .then(|| f.get(i + 3)?.parse().ok())
            .flatten()
    })?;
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let cmd = fs::read(proc_dir.join("cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let uid = fs::metadata(&proc_dir).map(|m| m.uid()).ok();
    let user = uid.map(|u| {
        fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|p| {
                p.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.get(2) == Some(&u.to_string().as_str())).then(|| f[0].to_owned())
                })
            })
            .unwrap_or_else(|| format!("uid {u}"))
    });
    let started = fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|st| {
            // Field 22 (start time in clock ticks after boot), counted after the ")" of comm.
            let ticks: u64 = st
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(19)?
                .parse()
                .ok()?;
            let btime: i64 = fs::read_to_string("/proc/stat")
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))?;
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            let t = time::OffsetDateTime::from_unix_timestamp(btime + (ticks / hz) as i64).ok()?;
            Some(format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year(),
                t.month() as u8,
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ))
        });
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    Some(format!(
        "pid {pid} on {host}{}{}{}",
        user.map(|u| format!(" as {u}")).unwrap_or_default(),
        started
            .map(|s| format!(", started {s}"))
            .unwrap_or_default(),
        if cmd.is_empty() {
            String::new()
        } else {
            format!(": {cmd}")
        }
    ))
}

/// Who holds a lock: process, machine, user and start time (shown to whoever waits).
pub fn holder() -> String {
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }));
    let now = time::OffsetDateTime::now_utc();
    format!(
        "pid {} on {host} as {user}, started {:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        std::process::id(),
        now.year(),
        now.month() as u8,
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn lock_refuses_a_second_holder_and_is_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join(".provision");
        let a = State::lock(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let e = State::lock(&dir).err().unwrap();
        assert!(
            e.contains("another provision run")
                && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        a.write("ca.key", b"k", 0o600).unwrap();
        assert_eq!(
            fs::metadata(dir.join("ca.key")).unwrap().mode() & 0o777,
            0o600
        );
        drop(a);
        let b = State::lock(&dir).unwrap();
        assert_eq!(b.read("ca.key").unwrap(), b"k");
        assert!(State::read_only(&dir).write("x", b"", 0o600).is_err());
    }

    #[test]
    fn the_lock_message_names_the_live_holder_not_the_file() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join(".provision");
        fs::create_dir_all(&dir).unwrap();
        // An earlier run's words are in the file; another process holds the lock now.
        fs::write(dir.join("lock"), "pid 1 on old as nobody\n").unwrap();
        let mut child = std::process::Command::new("flock")
            .arg(dir.join("lock"))
            .args(["sleep", "30"])
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let e = loop {
            match State::lock(&dir) {
                Err(e) => break e,
                Ok(s) if start.elapsed().as_secs() < 10 => {
                    drop(s);
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Ok(_) => panic!("flock never took the lock"),
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(e.contains(&format!("pid {}", child.id())), "{e}");
        assert!(e.contains("flock") && e.contains("started "), "{e}");
        assert!(!e.contains("pid 1 on old"), "{e}");
    }
}
