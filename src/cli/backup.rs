//! `provision backup`: a set of what the cluster cannot be rebuilt without, encrypted
//! with the vault password; `--verify SET` checks a set against its manifest.

use super::{exit, lab_or};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct BackupArgs {
    /// The inventory (the local lab's when omitted)
    pub inventory: Option<PathBuf>,
    /// Where the set goes (a new timestamped folder); default: backups/ beside the inventory
    #[arg(long)]
    pub to: Option<PathBuf>,
    /// Check a set (its folder) against its manifest instead of making one
    #[arg(long, value_name = "SET")]
    pub verify: Option<PathBuf>,
    /// OpenSSH client config to honour (default ~/.ssh/config)
    #[arg(long, short = 'F')]
    pub ssh_config: Option<PathBuf>,
    /// The controller's state directory (default: .provision beside the inventory)
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

pub fn main(a: BackupArgs) -> anyhow::Result<i32> {
    let passwords = crate::vault::passwords();
    if passwords.is_empty() {
        eprintln!(
            "error: a backup holds the CA key and every cephx key, so it is encrypted: give a vault password \
             (--vault-password-file FILE, --vault-id ID@FILE, --ask-vault-pass or ANSIBLE_VAULT_PASSWORD_FILE)"
        );
        return Ok(exit::INVALID);
    }
    if let Some(set) = &a.verify {
        return Ok(match crate::day2::backup::verify(set, &passwords) {
            Ok(bad) if bad.is_empty() => {
                out!(
                    "{}: every part matches the manifest and opens",
                    set.display()
                );
                exit::OK
            }
            Ok(bad) => {
                for b in &bad {
                    eprintln!("error: {}: {b}", set.display());
                }
                exit::FAILED
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::INVALID
            }
        });
    }
    let inventory = lab_or(a.inventory)?;
    let opts = crate::engine::Options {
        command_timeout: Duration::from_secs(600),
        ..super::read_options(inventory.clone(), None, a.state_dir, a.ssh_config)
    };
    let (prepared, rt) = match super::prepare_for(&opts, "changed")? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let to = a.to.unwrap_or_else(|| {
        inventory
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("backups")
    });
    let state_dir = opts.state_dir();
    // The state directory is read under its lock: no run changes it meanwhile.
    let state = match crate::state::State::lock(&state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::LOCKED);
        }
    };
    let pw = passwords[0].clone();
    let res = rt.block_on(async {
        let p = &prepared;
        let (mut f, silent) = crate::day2::Fleet::open(p, Duration::from_secs(600)).await;
        for s in &silent {
            eprintln!("warning: {s} did not answer: the set is taken from the others");
        }
        let r = crate::day2::backup::run(&f, &state_dir, &to, &pw).await;
        f.close().await;
        r
    });
    drop(state);
    let (set, parts) = res?;
    let mut failed = 0;
    for p in &parts {
        match &p.file {
            Some(file) => out!(
                "{:<11} {:>10} bytes  from {:<10} {}{}",
                p.name,
                p.bytes,
                p.from,
                file,
                if p.note.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", p.note)
                }
            ),
            None => {
                failed += usize::from(p.failed);
                out!(
                    "{:<11} {}: {}",
                    p.name,
                    if p.failed { "FAILED" } else { "not taken" },
                    p.note
                )
            }
        }
    }
    out!("backup set: {}", set.display());
    if failed > 0 {
        eprintln!("error: {failed} part(s) could not be taken: the set is incomplete");
        return Ok(exit::FAILED);
    }
    Ok(exit::OK)
}
