//! `provision restore [--state] [--etcd] --from SET`: the controller's state directory, and
//! etcd's data on every member, back from a backup set (the swarm and Ceph are not built
//! yet: docs/backup.md).

use super::exit;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Restore etcd on every member from the set's snapshot (a new cluster with every key)
    #[arg(long)]
    pub etcd: bool,
    /// Replace what holds data: a state directory with files, an etcd with keys (each is
    /// set aside, not deleted)
    #[arg(long)]
    pub force: bool,
    /// OpenSSH client config to honour (default ~/.ssh/config)
    #[arg(long, short = 'F')]
    pub ssh_config: Option<PathBuf>,
    /// How long etcd may take to be healthy again, in seconds
    #[arg(long, default_value_t = 180)]
    pub wait: u64,
    /// The controller's state directory (default: .provision beside the inventory)
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

pub fn main(a: RestoreArgs) -> anyhow::Result<i32> {
    if !a.state && !a.etcd {
        eprintln!(
            "error: say what to restore: --state (the controller's state directory), --etcd \
             (every member's data), or both (the swarm and Ceph come back by hand: docs/backup.md)"
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
    if a.state {
        let code = state(&a, &passwords)?;
        if code != exit::OK || !a.etcd {
            return Ok(code);
        }
    }
    etcd(&a, &passwords)
}

fn state(a: &RestoreArgs, passwords: &[crate::vault::Password]) -> anyhow::Result<i32> {
    let dir = a
        .state_dir
        .clone()
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
    match crate::day2::restore::state(&a.from, &dir, passwords, a.force) {
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

/// etcd on every member from the set's snapshot.
fn etcd(a: &RestoreArgs, passwords: &[crate::vault::Password]) -> anyhow::Result<i32> {
    let db = match crate::day2::restore::part(&a.from, "etcd", passwords) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("nothing was changed: no host was contacted");
            return Ok(exit::INVALID);
        }
    };
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&db));
    let opts = super::read_options(
        a.inventory.clone(),
        None,
        a.state_dir.clone(),
        a.ssh_config.clone(),
    );
    let (prepared, rt) = match super::prepare_for(&opts, "changed")? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let state = match crate::state::State::lock(&opts.state_dir()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::LOCKED);
        }
    };
    let wait = Duration::from_secs(a.wait);
    let res = rt.block_on(async {
        let p = &prepared;
        let (mut f, silent) = crate::day2::Fleet::open(p, wait).await;
        for s in &silent {
            eprintln!("warning: {s} did not answer");
        }
        let r = crate::day2::restore_etcd::run(&f, &db, &sha, a.force).await;
        f.close().await;
        r
    });
    drop(state);
    match res {
        Ok(lines) => {
            for l in &lines {
                out!("{l}");
            }
            out!(
                "etcd restored from {} on {} member(s)",
                a.from.display(),
                lines.len()
            );
            Ok(exit::OK)
        }
        Err((changed, e)) => {
            eprintln!("error: {e}");
            if changed {
                Ok(exit::FAILED)
            } else {
                eprintln!("nothing was changed");
                Ok(exit::INVALID)
            }
        }
    }
}
