//! `provision restore --state`: the controller's state directory (the CA key, every cephx
//! key, the fsid) back from a backup set, checked first; a state directory that holds
//! something is set aside, never overwritten.

use super::backup::{verify, MANIFEST};
use crate::vault::{self, Password};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What a restore did.
pub struct Restored {
    /// The files now in the state directory.
    pub files: Vec<String>,
    /// Where the state directory that was there went.
    pub set_aside: Option<PathBuf>,
}

/// Part `name` of `set`, decrypted, once the whole set verifies (every part present, of
/// its size and checksum, opening with the password).
pub fn part(set: &Path, name: &str, passwords: &[Password]) -> Result<Vec<u8>, String> {
    let bad = verify(set, passwords)?;
    if !bad.is_empty() {
        return Err(format!("the set does not verify: {}", bad.join("; ")));
    }
    let m: Value = std::fs::read(set.join(MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let file = m["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["file"].as_str())
        .ok_or_else(|| format!("{}: the set has no {name} part", set.display()))?;
    let text = std::fs::read_to_string(set.join(file)).map_err(|e| format!("{file}: {e}"))?;
    vault::decrypt(&text, passwords).map_err(|e| format!("{file}: {e}"))
}

/// Restores the `state` part of `set` into `dir`. A `dir` holding files is refused unless
/// `force`; then it is moved aside (`DIR.before-restore-STAMP`).
pub fn state(
    set: &Path,
    dir: &Path,
    passwords: &[Password],
    force: bool,
) -> Result<Restored, String> {
    let tar = part(set, "state", passwords)?;
    let held = held(dir);
    if !held.is_empty() && !force {
        return Err(format!(
            "{} already holds {}: restoring would replace a live state; move it away first, or add --force \
             (it is then set aside, not deleted)",
            dir.display(),
            held.join(", ")
        ));
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".provision-restore")
        .tempdir_in(parent)
        .map_err(|e| format!("{}: {e}", parent.display()))?;
    untar(&tar, tmp.path())?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(|e| e.to_string())?;
    let set_aside = if dir.exists() {
        let aside = PathBuf::from(format!(
            "{}.before-restore-{}",
            dir.display(),
            crate::sys::now_utc().replace([':', '-'], "")
        ));
        std::fs::rename(dir, &aside).map_err(|e| format!("{}: {e}", dir.display()))?;
        Some(aside)
    } else {
        None
    };
    let kept = tmp.keep();
    std::fs::rename(&kept, dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(Restored {
        files: held_in(dir),
        set_aside,
    })
}

/// The files of a state directory, its lock aside.
fn held(dir: &Path) -> Vec<String> {
    if !dir.is_dir() {
        return Vec::new();
    }
    held_in(dir)
}

fn held_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lock" && !n.ends_with(".lock"))
        .collect();
    v.sort();
    v
}

fn untar(tar: &[u8], into: &Path) -> Result<(), String> {
    use std::io::Write;
    let mut c = std::process::Command::new("tar")
        .arg("-C")
        .arg(into)
        .args(["--no-same-owner", "-xf", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("tar: {e}"))?;
    c.stdin
        .take()
        .ok_or("tar: no stdin")?
        .write_all(tar)
        .map_err(|e| format!("tar: {e}"))?;
    let o = c.wait_with_output().map_err(|e| format!("tar: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "tar: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set with one `state` part made from `dir`, as `provision backup` writes it.
    fn set_of(dir: &Path, set: &Path, pw: &Password) {
        let tar = std::process::Command::new("tar")
            .arg("-C")
            .arg(dir)
            .args(["-cf", "-", "."])
            .output()
            .unwrap()
            .stdout;
        let part =
            super::super::backup::put(set, "state", "controller", &tar, pw, String::new()).unwrap();
        super::super::backup::write_manifest(set, "inv.yml", &[part]).unwrap();
    }

    #[test]
    fn the_state_comes_back_and_a_live_one_is_set_aside() {
        let t = tempfile::tempdir().unwrap();
        let (state, set) = (t.path().join(".provision"), t.path().join("set"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(&set).unwrap();
        std::fs::write(state.join("ca.key"), "KEY").unwrap();
        std::fs::write(state.join("ceph.json"), "{\"fsid\":\"x\"}").unwrap();
        let pw = Password {
            id: "default".into(),
            secret: "pw".into(),
        };
        set_of(&state, &set, &pw);

        // Lost: it comes back, the same files and contents, 0700.
        std::fs::remove_dir_all(&state).unwrap();
        let r = state_restore(&set, &state, &pw, false).unwrap();
        assert_eq!(r.files, ["ca.key", "ceph.json"]);
        assert!(r.set_aside.is_none());
        assert_eq!(
            std::fs::read_to_string(state.join("ca.key")).unwrap(),
            "KEY"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );

        // There: refused; with force, the one there is set aside.
        std::fs::write(state.join("ca.key"), "NEWER").unwrap();
        let e = state_restore(&set, &state, &pw, false).err().unwrap();
        assert!(e.contains("already holds ca.key, ceph.json"), "{e}");
        let r = state_restore(&set, &state, &pw, true).unwrap();
        let aside = r.set_aside.unwrap();
        assert_eq!(
            std::fs::read_to_string(aside.join("ca.key")).unwrap(),
            "NEWER"
        );
        assert_eq!(
            std::fs::read_to_string(state.join("ca.key")).unwrap(),
            "KEY"
        );

        // A wrong password, a damaged part: refused, nothing touched.
        let e = state_restore(
            &set,
            &state,
            &Password {
                id: "default".into(),
                secret: "no".into(),
            },
            true,
        )
        .err()
        .unwrap();
        assert!(e.contains("does not verify"), "{e}");
        let f = set.join("state.vault");
        let mut b = std::fs::read(&f).unwrap();
        let i = b.len() / 2;
        b[i] = if b[i] == b'0' { b'1' } else { b'0' };
        std::fs::write(&f, b).unwrap();
        let e = state_restore(&set, &state, &pw, true).err().unwrap();
        assert!(e.contains("differs from the manifest"), "{e}");
        assert_eq!(
            std::fs::read_to_string(state.join("ca.key")).unwrap(),
            "KEY"
        );
    }

    fn state_restore(
        set: &Path,
        dir: &Path,
        pw: &Password,
        force: bool,
    ) -> Result<Restored, String> {
        state(set, dir, std::slice::from_ref(pw), force)
    }
}
