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
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                return Err(format!(
                    "another provision run holds {} ({}): wait for it to finish; \
                     a run that died releases the lock by itself",
                    path.display(),
                    holder.trim()
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
}
