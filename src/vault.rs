//! Ansible Vault: files and inline `!vault` values encrypted by `ansible-vault` (format
//! 1.1, and 1.2 with a vault id), read with the passwords the command line gives, and
//! written so `ansible-vault` reads them. AES-256-CTR under keys derived with
//! PBKDF2-HMAC-SHA256 (10,000 rounds) from the password and a random salt, authenticated
//! with HMAC-SHA256. Decrypted values live in memory only and are masked in every output.

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::{Mutex, RwLock};

type Ctr = ctr::Ctr128BE<aes::Aes256>;

pub const HEADER: &str = "$ANSIBLE_VAULT;";

/// A vault password and its id (`default` when none was given).
#[derive(Clone)]
pub struct Password {
    pub id: String,
    pub secret: String,
}

static PASSWORDS: RwLock<Vec<Password>> = RwLock::new(Vec::new());
static REVEALED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The passwords every vault value of this run is tried with.
pub fn set_passwords(p: Vec<Password>) {
    *PASSWORDS.write().unwrap_or_else(|e| e.into_inner()) = p;
}

/// The passwords of this run.
pub fn passwords() -> Vec<Password> {
    PASSWORDS.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Every value decrypted so far: the outputs mask them.
pub fn revealed() -> Vec<String> {
    REVEALED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Was this value decrypted from a vault?
pub fn is_revealed(s: &str) -> bool {
    !s.is_empty()
        && REVEALED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|r| r == s)
}

/// Is this text a vault (a file or an inline value)?
pub fn is_vault(text: &str) -> bool {
    text.trim_start().starts_with(HEADER)
}

/// Decrypts with the run's passwords (the one of the value's id first).
pub fn open(text: &str) -> Result<String, String> {
    let passwords = PASSWORDS.read().unwrap_or_else(|e| e.into_inner()).clone();
    if passwords.is_empty() {
        return Err(
            "this is encrypted with Ansible Vault, and no vault password was given: \
             use --vault-password-file FILE, --ask-vault-pass, --vault-id ID@SOURCE or \
             ANSIBLE_VAULT_PASSWORD_FILE"
                .into(),
        );
    }
    let plain = decrypt(text, &passwords)?;
    let s = String::from_utf8(plain)
        .map_err(|_| "the decrypted vault is not UTF-8 text".to_string())?;
    if !s.trim().is_empty() {
        REVEALED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.trim_end_matches('\n').to_owned());
    }
    Ok(s)
}

/// Decrypts `text` with the first of `passwords` whose HMAC matches (those of its vault
/// id first).
pub fn decrypt(text: &str, passwords: &[Password]) -> Result<Vec<u8>, String> {
    let mut lines = text.trim().lines();
    let header = lines.next().unwrap_or("");
    let fields: Vec<&str> = header.trim().split(';').collect();
    let (version, cipher, id) = match fields.as_slice() {
        [_, v, c] => (*v, *c, None),
        [_, v, c, id] => (*v, *c, Some(*id)),
        _ => return Err(format!("not an Ansible Vault header: `{header}`")),
    };
    if !matches!(version, "1.1" | "1.2") || cipher != "AES256" {
        return Err(format!(
            "vault format {version} with {cipher} is not supported (1.1 and 1.2 with AES256 are)"
        ));
    }
    let body: String = lines.map(str::trim).collect();
    let inner = hex::decode(&body)
        .map_err(|_| "the vault body is not hexadecimal: truncated or damaged?".to_string())?;
    let inner = String::from_utf8(inner).map_err(|_| "the vault body is damaged".to_string())?;
    let parts: Vec<&str> = inner.lines().collect();
    let [salt, mac, data] = parts.as_slice() else {
        return Err("the vault body is damaged (salt, HMAC and data expected)".into());
    };
    let (salt, mac, data) = (
        hex::decode(salt).map_err(|_| "the vault's salt is damaged")?,
        hex::decode(mac).map_err(|_| "the vault's HMAC is damaged")?,
        hex::decode(data).map_err(|_| "the vault's data is damaged")?,
    );
    let mut order: Vec<&Password> = passwords
        .iter()
        .filter(|p| Some(p.id.as_str()) == id)
        .collect();
    order.extend(passwords.iter().filter(|p| Some(p.id.as_str()) != id));
    for p in order {
        let (key, hkey, iv) = keys(&p.secret, &salt);
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&hkey).expect("any key length");
        m.update(&data);
        if m.verify_slice(&mac).is_err() {
            continue;
        }
        let mut buf = data.clone();
        Ctr::new(&key.into(), &iv.into()).apply_keystream(&mut buf);
        return unpad(buf);
    }
    Err(format!(
        "wrong vault password: none of the {} given decrypts it{}",
        passwords.len(),
        id.map(|i| format!(" (its vault id is `{i}`)"))
            .unwrap_or_default()
    ))
}

/// Encrypts `plain` as `ansible-vault` does: format 1.1, or 1.2 with a vault id other
/// than `default`.
pub fn encrypt(plain: &[u8], p: &Password) -> String {
    let mut salt = [0u8; 32];
    getrandom(&mut salt);
    let (key, hkey, iv) = keys(&p.secret, &salt);
    let pad = 16 - plain.len() % 16;
    let mut buf = plain.to_vec();
    buf.extend(std::iter::repeat_n(pad as u8, pad));
    Ctr::new(&key.into(), &iv.into()).apply_keystream(&mut buf);
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&hkey).expect("any key length");
    m.update(&buf);
    let mac = m.finalize().into_bytes();
    let inner = format!(
        "{}\n{}\n{}",
        hex::encode(salt),
        hex::encode(mac),
        hex::encode(&buf)
    );
    let body = hex::encode(inner);
    let mut out = if p.id == "default" {
        "$ANSIBLE_VAULT;1.1;AES256\n".to_string()
    } else {
        format!("$ANSIBLE_VAULT;1.2;AES256;{}\n", p.id)
    };
    for chunk in body.as_bytes().chunks(80) {
        out += std::str::from_utf8(chunk).unwrap_or_default();
        out.push('\n');
    }
    out
}

fn keys(password: &str, salt: &[u8]) -> ([u8; 32], [u8; 32], [u8; 16]) {
    let mut k = [0u8; 80];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, 10_000, &mut k);
    let (mut a, mut b, mut c) = ([0u8; 32], [0u8; 32], [0u8; 16]);
    a.copy_from_slice(&k[..32]);
    b.copy_from_slice(&k[32..64]);
    c.copy_from_slice(&k[64..]);
    (a, b, c)
}

fn unpad(mut buf: Vec<u8>) -> Result<Vec<u8>, String> {
    let n = *buf.last().unwrap_or(&0) as usize;
    if n == 0 || n > 16 || n > buf.len() || !buf[buf.len() - n..].iter().all(|b| *b as usize == n) {
        return Err("the vault's padding is damaged".into());
    }
    buf.truncate(buf.len() - n);
    Ok(buf)
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        if f.read_exact(buf).is_ok() {
            return;
        }
    }
    panic!("cannot read /dev/urandom");
}

/// The password a source gives: an executable file's output, a file's first line.
pub fn read_source(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = if meta.permissions().mode() & 0o111 != 0 && meta.is_file() {
        // A relative path is this folder's, never a command found on PATH.
        let exe = if path.is_relative() {
            std::path::Path::new(".").join(path)
        } else {
            path.to_path_buf()
        };
        let o = std::process::Command::new(exe)
            .output()
            .map_err(|e| format!("{}: cannot run it: {e}", path.display()))?;
        if !o.status.success() {
            return Err(format!(
                "{}: the password script failed ({})",
                path.display(),
                o.status
            ));
        }
        String::from_utf8_lossy(&o.stdout).into_owned()
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
    };
    let line = text
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches('\r')
        .to_owned();
    if line.is_empty() {
        return Err(format!("{}: the vault password is empty", path.display()));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(id: &str, s: &str) -> Password {
        Password {
            id: id.into(),
            secret: s.into(),
        }
    }

    /// Written by ansible-vault 2.14 (`ansible-vault encrypt_string --vault-password-file`
    /// with the password `lab-secret`): the value `s3cr3t-value`.
    const FROM_ANSIBLE: &str = include_str!("../tests/fixtures/vault/inline.txt");

    #[test]
    fn reads_what_ansible_vault_wrote() {
        let plain = decrypt(FROM_ANSIBLE, &[pw("default", "lab-secret")]).unwrap();
        assert_eq!(plain, b"s3cr3t-value");
        let e = decrypt(FROM_ANSIBLE, &[pw("default", "nope")]).unwrap_err();
        assert!(e.contains("wrong vault password"), "{e}");
    }

    #[test]
    fn round_trip_with_ids_and_damage_refused() {
        for id in ["default", "prod"] {
            let v = encrypt(b"line one\nline two\n", &pw(id, "pass"));
            assert!(v.starts_with(if id == "default" {
                "$ANSIBLE_VAULT;1.1;AES256\n"
            } else {
                "$ANSIBLE_VAULT;1.2;AES256;prod\n"
            }));
            let got = decrypt(&v, &[pw("other", "x"), pw(id, "pass")]).unwrap();
            assert_eq!(got, b"line one\nline two\n");
            let cut = &v[..v.len() - 20];
            assert!(
                decrypt(cut, &[pw(id, "pass")]).is_err(),
                "a truncated vault"
            );
        }
        let e = decrypt("$ANSIBLE_VAULT;2.0;AES256\n00\n", &[pw("default", "p")]).unwrap_err();
        assert!(e.contains("not supported"), "{e}");
    }
}
