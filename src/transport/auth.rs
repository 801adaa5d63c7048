//! Public-key authentication: ssh-agent identities first, then key files, as OpenSSH does.
//! Key files are read once before any connection; an encrypted key not held by the agent
//! is decrypted with a passphrase asked once on the terminal.

use russh::client::Handle;
use russh::keys::agent::client::AgentClient;
use russh::keys::{load_secret_key, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Key files decrypted and ready, shared by every connection.
#[derive(Default)]
pub struct Keys {
    files: HashMap<PathBuf, Arc<PrivateKey>>,
    /// Public halves of files we could not or need not decrypt (the agent holds them).
    public: HashMap<PathBuf, PublicKey>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} loaded, secrets hidden)", self.files.len())
    }
}

fn same(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

async fn agent_identities() -> Vec<PublicKey> {
    match AgentClient::connect_env().await {
        Ok(mut a) => a
            .request_identities()
            .await
            .map(|ids| ids.iter().map(|i| i.public_key().into_owned()).collect())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

impl Keys {
    /// Reads every key file; asks for passphrases (once per file) when `ask` is set.
    pub async fn load(files: &[PathBuf], ask: bool) -> Result<Keys, String> {
        let agent = agent_identities().await;
        let mut keys = Keys::default();
        for f in files {
            if keys.files.contains_key(f) || keys.public.contains_key(f) {
                continue;
            }
            match load_secret_key(f, None) {
                Ok(k) => {
                    keys.files.insert(f.clone(), Arc::new(k));
                }
                Err(russh::keys::Error::KeyIsEncrypted) => {
                    let public = public_half(f)?;
                    if agent.iter().any(|a| same(a, &public)) {
                        keys.public.insert(f.clone(), public);
                        continue;
                    }
                    if !ask {
                        return Err(format!(
                            "{} is encrypted and ssh-agent does not hold it: add it with `ssh-add {}` or run on a terminal to be asked for its passphrase",
                            f.display(),
                            f.display()
                        ));
                    }
                    let key = decrypt(f)?;
                    keys.files.insert(f.clone(), Arc::new(key));
                }
                Err(e) => return Err(format!("cannot read private key {}: {e}", f.display())),
            }
        }
        Ok(keys)
    }

    fn public_of(&self, f: &Path) -> Option<PublicKey> {
        self.files
            .get(f)
            .map(|k| k.public_key().clone())
            .or_else(|| self.public.get(f).cloned())
    }
}

fn public_half(f: &Path) -> Result<PublicKey, String> {
    let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
    PrivateKey::from_openssh(&text)
        .map(|k| k.public_key().clone())
        .map_err(|e| format!("{}: {e}", f.display()))
}

fn decrypt(f: &Path) -> Result<PrivateKey, String> {
    for attempt in 0..3 {
        let pass = rpassword::prompt_password(format!("Passphrase for {}: ", f.display()))
            .map_err(|e| format!("cannot ask for the passphrase of {}: {e}", f.display()))?;
        match load_secret_key(f, Some(&pass)) {
            Ok(k) => return Ok(k),
            Err(_) if attempt < 2 => eprintln!("wrong passphrase, try again"),
            Err(e) => return Err(format!("cannot decrypt {}: {e}", f.display())),
        }
    }
    unreachable!("the loop returns on its third attempt")
}

/// Tries the agent's identities, then the key files; true when the server accepted one.
pub async fn authenticate<H: russh::client::Handler>(
    handle: &mut Handle<H>,
    user: &str,
    files: &[PathBuf],
    identities_only: bool,
    keys: &Keys,
    tried: &mut Vec<String>,
) -> Result<bool, russh::Error> {
    let hash = handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten();
    let wanted: Vec<PublicKey> = files.iter().filter_map(|f| keys.public_of(f)).collect();
    let mut offered: Vec<PublicKey> = Vec::new();
    if let Ok(mut agent) = AgentClient::connect_env().await {
        let ids = agent.request_identities().await.unwrap_or_default();
        for id in ids {
            let key = id.public_key().into_owned();
            if identities_only && !wanted.iter().any(|w| same(w, &key)) {
                continue;
            }
            match handle
                .authenticate_publickey_with(user, key.clone(), hash, &mut agent)
                .await
            {
                Ok(r) if r.success() => return Ok(true),
                Ok(_) => tried.push(format!("agent key {}: refused", id.comment())),
                Err(e) => tried.push(format!("agent key {}: {e}", id.comment())),
            }
            offered.push(key);
        }
    }
    for f in files {
        let Some(key) = keys.files.get(f) else {
            continue;
        };
        if offered.iter().any(|o| same(o, key.public_key())) {
            continue;
        }
        let res = handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
            .await?;
        if res.success() {
            return Ok(true);
        }
        tried.push(format!("{}: refused by the server", f.display()));
    }
    Ok(false)
}
