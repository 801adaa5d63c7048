//! `provision restore --state --from SET`: the controller's state directory back from a
//! backup set (the rest of a cluster restore is not built yet: docs/backup.md).

use super::exit;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The inventory whose state directory is restored (.provision beside it)
    pub inventory: PathBuf,
    /// The backup set (its folder, as `provision backup` printed it)
    #[arg(long, value_name = "SET")]
    pub from: PathBuf,
    /// Restore the controller's state directory (CA key, cephx keys, fsid)
    #[arg(long)]
    pub state: bool,
    /// Replace a state directory that holds files (it is set aside, not deleted)
    #[arg(long)]
    pub force: bool,
    /// The controller's state directory (default: .provision beside the inventory)
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

pub fn main(a: RestoreArgs) -> anyhow::Result<i32> {
    if !a.state {
        eprintln!(
            "error: only the controller's state directory can be restored so far: add --state \
             (etcd, the swarm and Ceph come back by hand from the set: docs/backup.md)"
        );
        return Ok(exit::INVALID);
    }
    let passwords = crate::vault::passwords();
    if passwords.is_empty() {
        eprintln!(
            "error: the set is encrypted: give its vault password (--vault-password-file FILE, \
             --vault-id ID@FILE, --ask-vault-pass or ANSIBLE_VAULT_PASSWORD_FILE)"
        );
        return Ok(exit::INVALID);
    }
    let dir = a
        .state_dir
        .unwrap_or_else(|| crate::state::default_dir(&a.inventory));
    // No run may use the state directory meanwhile.
    let _lock = if dir.is_dir() {
        match crate::state::State::lock(&dir) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(exit::LOCKED);
            }
        }
    } else {
        None
    };
    match crate::day2::restore::state(&a.from, &dir, &passwords, a.force) {
        Ok(r) => {
            if let Some(aside) = &r.set_aside {
                out!(
                    "the state directory there was set aside: {}",
                    aside.display()
                );
            }
            out!(
                "restored {} from {}: {}",
                dir.display(),
                a.from.display(),
                r.files.join(", ")
            );
            Ok(exit::OK)
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("nothing was changed");
            Ok(exit::INVALID)
        }
    }
}
