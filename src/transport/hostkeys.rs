//! Host key verification against known_hosts files; never skipped.

use russh::keys::known_hosts::{check_known_hosts_path, learn_known_hosts_path};
use russh::keys::{Error as KeyError, PublicKey};
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct HostKeyPolicy {
    /// Files to check, in order; new keys are recorded in the first.
    pub files: Vec<PathBuf>,
    /// Trust on first use: record an unknown key instead of refusing it.
    pub accept_new: bool,
}

impl HostKeyPolicy {
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Result<(), String> {
        let fp = key.fingerprint(Default::default());
        for file in self.files.iter().filter(|f| f.exists()) {
            match check_known_hosts_path(host, port, key, file) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(KeyError::KeyChanged { line }) => {
                    return Err(format!(
                        "HOST KEY MISMATCH for {host}: it now presents {fp}, which differs from the key \
                         recorded at {}:{line}. This can mean a man-in-the-middle attack. If the host was \
                         really reinstalled, remove that line and run again with --accept-new-host-keys.",
                        file.display()
                    ))
                }
                Err(e) => return Err(format!("cannot read known hosts file {}: {e}", file.display())),
            }
        }
        let Some(first) = self.files.first() else {
            return Err(format!(
                "unknown host key for {host} ({fp}) and no known_hosts file to record it in"
            ));
        };
        if !self.accept_new {
            return Err(format!(
                "unknown host key for {host} ({fp}): it is in none of {}. Verify the fingerprint, then run \
                 again with --accept-new-host-keys to record it in {}.",
                self.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "),
                first.display()
            ));
        }
        learn_known_hosts_path(host, port, key, first).map_err(|e| {
            format!(
                "cannot record the host key of {host} in {}: {e}",
                first.display()
            )
        })
    }
}
