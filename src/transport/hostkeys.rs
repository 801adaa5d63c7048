//! Host key verification against known_hosts files; never skipped.

use russh::keys::known_hosts::{known_host_keys_path, learn_known_hosts_path};
use russh::keys::{Algorithm, PublicKey};
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct HostKeyPolicy {
    /// Files to check, in order; new keys are recorded in the first.
    pub files: Vec<PathBuf>,
    /// Trust on first use: record an unknown key instead of refusing it.
    pub accept_new: bool,
}

impl HostKeyPolicy {
    /// Every key recorded for the host: (file, line, key).
    fn known(&self, host: &str, port: u16) -> Result<Vec<(PathBuf, usize, PublicKey)>, String> {
        let mut out = Vec::new();
        for file in self.files.iter().filter(|f| f.exists()) {
            let keys = known_host_keys_path(host, port, file)
                .map_err(|e| format!("cannot read known hosts file {}: {e}", file.display()))?;
            out.extend(keys.into_iter().map(|(line, k)| (file.clone(), line, k)));
        }
        Ok(out)
    }

    /// The key types recorded for the host, to ask the server for those first (as OpenSSH does).
    pub fn known_algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let mut v: Vec<Algorithm> = Vec::new();
        for (_, _, k) in self.known(host, port).unwrap_or_default() {
            let algs = match k.algorithm() {
                // An RSA key is asked for with SHA-2 signatures, never SHA-1.
                Algorithm::Rsa { .. } => vec![
                    Algorithm::Rsa {
                        hash: Some(russh::keys::HashAlg::Sha512),
                    },
                    Algorithm::Rsa {
                        hash: Some(russh::keys::HashAlg::Sha256),
                    },
                ],
                a => vec![a],
            };
            for a in algs {
                if !v.contains(&a) {
                    v.push(a);
                }
            }
        }
        v
    }

    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Result<(), String> {
        let fp = key.fingerprint(Default::default());
        let known = self.known(host, port)?;
        if known.iter().any(|(_, _, k)| k.key_data() == key.key_data()) {
            return Ok(());
        }
        // Any recorded key and none matches is a mismatch, whatever the key type.
        if let Some((file, line, k)) = known.first() {
            return Err(format!(
                "HOST KEY MISMATCH for {host}: it now presents {fp} ({}), but {}:{line} records a {} key for it. \
                 This can mean a man-in-the-middle attack. If the host was really reinstalled, remove that \
                 line and run again with --accept-new-host-keys.",
                key.algorithm(),
                file.display(),
                k.algorithm()
            ));
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
        })?;
        eprintln!(
            "note: recorded the host key of {host} ({fp}, {}) in {}",
            key.algorithm(),
            first.display()
        );
        Ok(())
    }
}
