//! `provision vault encrypt|decrypt|view|edit FILE`: files `ansible-vault` reads and
//! writes, with the passwords of --vault-password-file, --vault-id, --ask-vault-pass or
//! ANSIBLE_VAULT_PASSWORD_FILE (asked for on the terminal when none is given).

use super::exit;
use crate::vault::{self, Password};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum VaultCmd {
    /// Encrypt files in place (format 1.1; 1.2 with a --vault-id other than `default`)
    Encrypt { files: Vec<PathBuf> },
    /// Decrypt files in place
    Decrypt { files: Vec<PathBuf> },
    /// Print a file decrypted
    View { file: PathBuf },
    /// Edit a file decrypted in $EDITOR, then encrypt it again
    Edit { file: PathBuf },
}

pub fn main(cmd: VaultCmd, given: Vec<Password>) -> anyhow::Result<i32> {
    let fail = |e: String| {
        eprintln!("error: {e}");
        Ok(exit::INVALID)
    };
    let passwords = if given.is_empty() {
        match ask(matches!(cmd, VaultCmd::Encrypt { .. })) {
            Ok(p) => vec![p],
            Err(e) => return fail(e),
        }
    } else {
        given
    };
    let read = |f: &Path| -> Result<String, String> {
        std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))
    };
    let plain = |f: &Path| -> Result<Vec<u8>, String> {
        let t = read(f)?;
        if !vault::is_vault(&t) {
            return Err(format!("{}: not encrypted with Ansible Vault", f.display()));
        }
        vault::decrypt(&t, &passwords).map_err(|e| format!("{}: {e}", f.display()))
    };
    let mode = |f: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(f)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o600)
    };
    match cmd {
        VaultCmd::Encrypt { files } => {
            for f in &files {
                let t = match read(f) {
                    Ok(t) => t,
                    Err(e) => return fail(e),
                };
                if vault::is_vault(&t) {
                    return fail(format!("{}: already encrypted", f.display()));
                }
                let v = vault::encrypt(t.as_bytes(), &passwords[0]);
                crate::sys::write_atomic(f, v.as_bytes(), mode(f))?;
                eprintln!("encrypted {}", f.display());
            }
        }
        VaultCmd::Decrypt { files } => {
            for f in &files {
                match plain(f) {
                    Ok(p) => crate::sys::write_atomic(f, &p, mode(f))?,
                    Err(e) => return fail(e),
                }
                eprintln!("decrypted {}", f.display());
            }
        }
        VaultCmd::View { file } => match plain(&file) {
            Ok(p) => {
                use std::io::Write;
                let _ = std::io::stdout().write_all(&p);
            }
            Err(e) => return fail(e),
        },
        VaultCmd::Edit { file } => {
            let p = match plain(&file) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            // Its id kept: the password that opened it encrypts it again.
            let t = read(&file).unwrap_or_default();
            let id = t
                .lines()
                .next()
                .and_then(|h| h.split(';').nth(3))
                .unwrap_or("default");
            let pw = passwords
                .iter()
                .find(|x| {
                    vault::decrypt(&t, std::slice::from_ref(x)).is_ok()
                        && (x.id == id || id == "default")
                })
                .or_else(|| {
                    passwords
                        .iter()
                        .find(|x| vault::decrypt(&t, std::slice::from_ref(x)).is_ok())
                })
                .cloned()
                .unwrap_or_else(|| passwords[0].clone());
            let dir = tempfile::tempdir()?;
            let tmp = dir.path().join(file.file_name().unwrap_or_default());
            crate::sys::write_atomic(&tmp, &p, 0o600)?;
            let editor = std::env::var("EDITOR").unwrap_or_else(|_| "vi".into());
            let st = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{editor} \"$1\""))
                .arg("sh")
                .arg(&tmp)
                .status()?;
            if !st.success() {
                return fail(format!(
                    "{editor} failed ({st}); {} is unchanged",
                    file.display()
                ));
            }
            let new = std::fs::read(&tmp)?;
            if new != p {
                let pw = Password {
                    id: id.to_owned(),
                    ..pw
                };
                crate::sys::write_atomic(&file, vault::encrypt(&new, &pw).as_bytes(), mode(&file))?;
                eprintln!("encrypted {} again", file.display());
            }
        }
    }
    Ok(exit::OK)
}

/// A password from the terminal (twice for a new encryption).
fn ask(confirm: bool) -> Result<Password, String> {
    let p = rpassword::prompt_password("Vault password: ").map_err(|e| {
        format!(
            "no vault password given and none could be asked for ({e}): use --vault-password-file"
        )
    })?;
    if confirm {
        let again = rpassword::prompt_password("Confirm vault password: ")
            .map_err(|e| format!("cannot read the vault password: {e}"))?;
        if again != p {
            return Err("the passwords differ".into());
        }
    }
    if p.is_empty() {
        return Err("the vault password is empty".into());
    }
    Ok(Password {
        id: "default".into(),
        secret: p,
    })
}
