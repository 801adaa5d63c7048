//! The cluster's identity, made on the controller and kept in the state directory
//! (`ceph.json`, 0600) beside the CA: the fsid and every cephx key. Never regenerated
//! silently: a lost file with a running cluster is refused by the step.

use crate::state::State;
use base64::Engine;
use serde::{Deserialize, Serialize};

pub const FILE: &str = "ceph.json";

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Secrets {
    pub fsid: String,
    /// Entity name (`mon.`, `client.admin`, `mgr.node1`...) to its cephx key.
    pub keys: std::collections::BTreeMap<String, String>,
}

fn random(n: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(b)
}

/// A cephx secret as `ceph-authtool --gen-print-key` prints it: type 1 (AES), the
/// creation time, then 16 random bytes, base64.
pub fn new_key() -> Result<String, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut b = Vec::with_capacity(28);
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&(now.as_secs() as u32).to_le_bytes());
    b.extend_from_slice(&now.subsec_nanos().to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(&random(16)?);
    Ok(base64::engine::general_purpose::STANDARD.encode(b))
}

/// A random (version 4) UUID.
pub fn new_fsid() -> Result<String, String> {
    let mut b = random(16)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

impl Secrets {
    pub fn load(state: &State) -> Result<Option<Secrets>, String> {
        match state.read(FILE) {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                format!(
                    "{} is not readable ({e}): restore it from your backup",
                    state.dir.join(FILE).display()
                )
            }),
        }
    }

    pub fn create() -> Result<Secrets, String> {
        Ok(Secrets {
            fsid: new_fsid()?,
            keys: Default::default(),
        })
    }

    /// The key of `entity`, made now if it has none yet. True when one was made.
    pub fn ensure(&mut self, entity: &str) -> Result<bool, String> {
        if self.keys.contains_key(entity) {
            return Ok(false);
        }
        self.keys.insert(entity.to_owned(), new_key()?);
        Ok(true)
    }

    pub fn key(&self, entity: &str) -> &str {
        self.keys.get(entity).map(String::as_str).unwrap_or("")
    }

    pub fn save(&self, state: &State) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        state.write(FILE, &text, 0o600)
    }
}

/// The capabilities provision gives each kind of entity.
pub fn caps(entity: &str, fs: &str) -> Vec<(&'static str, String)> {
    let kind = entity.split('.').next().unwrap_or("");
    match (kind, entity) {
        (_, "mon.") => vec![("mon", "allow *".into())],
        (_, "client.admin") => ["mds", "mgr", "mon", "osd"]
            .into_iter()
            .map(|k| (k, "allow *".to_string()))
            .collect(),
        (_, "client.bootstrap-osd") => vec![
            ("mgr", "allow r".into()),
            ("mon", "profile bootstrap-osd".into()),
        ],
        ("mgr", _) => vec![
            ("mds", "allow *".into()),
            ("mon", "allow profile mgr".into()),
            ("osd", "allow *".into()),
        ],
        ("mds", _) => vec![
            ("mds", "allow".into()),
            ("mgr", "allow profile mds".into()),
            ("mon", "allow profile mds".into()),
            ("osd", "allow rwx".into()),
        ],
        // A CephFS client: this file system only (what `ceph fs authorize FS NAME / rw` gives).
        _ => vec![
            ("mds", format!("allow rw fsname={fs}")),
            ("mon", format!("allow r fsname={fs}")),
            ("osd", format!("allow rw tag cephfs data={fs}")),
        ],
    }
}

/// A keyring file holding `entities`, with their caps when `with_caps`.
pub fn keyring(s: &Secrets, entities: &[&str], fs: &str, with_caps: bool) -> String {
    let mut out = String::new();
    for e in entities {
        out += &format!("[{e}]\n\tkey = {}\n", s.key(e));
        if with_caps {
            for (k, v) in caps(e, fs) {
                out += &format!("\tcaps {k} = \"{v}\"\n");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_cephx_layout_and_differ() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_ne!(a, b);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .unwrap();
        assert_eq!(raw.len(), 28);
        assert_eq!(&raw[0..2], &[1, 0]);
        assert_eq!(&raw[10..12], &[16, 0]);
        assert_eq!(a.len(), 40);
    }

    #[test]
    fn fsid_is_a_v4_uuid() {
        let f = new_fsid().unwrap();
        assert_eq!(f.len(), 36);
        assert_eq!(f.as_bytes()[14], b'4');
        assert!("89ab".contains(f.as_bytes()[19] as char), "{f}");
    }

    #[test]
    fn keyring_lists_caps_of_each_entity() {
        let mut s = Secrets::create().unwrap();
        s.ensure("client.swarm").unwrap();
        assert!(!s.ensure("client.swarm").unwrap());
        let k = keyring(&s, &["client.swarm"], "cephfs", true);
        assert!(k.starts_with("[client.swarm]\n\tkey = "), "{k}");
        assert!(
            k.contains("caps osd = \"allow rw tag cephfs data=cephfs\""),
            "{k}"
        );
        assert!(!keyring(&s, &["client.swarm"], "cephfs", false).contains("caps"));
    }
}
