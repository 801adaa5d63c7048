//! `provision pki status|client`: the certificates of the cluster, from the controller.

use super::{exit, lab_or, read_options, OutputMode};
use crate::pki::Ca;
use crate::state::State;
use clap::Subcommand;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum PkiCmd {
    /// Every host's certificates: names, expiry, issuer (exit 5 when one is due or foreign)
    Status {
        /// The inventory (the local lab's when omitted)
        inventory: Option<PathBuf>,
        /// Only these hosts
        #[arg(long, short = 'l')]
        limit: Option<String>,
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = OutputMode::Text)]
        output: OutputMode,
        /// OpenSSH client config to honour (default ~/.ssh/config)
        #[arg(long, short = 'F')]
        ssh_config: Option<PathBuf>,
    },
    /// Writes NAME.crt, NAME.key (0600) and ca.crt for an operator (docker --tlsverify, etcdctl)
    Client {
        name: String,
        /// The inventory whose CA signs it (the local lab's when omitted)
        inventory: Option<PathBuf>,
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Where to write the files
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Lifetime in days
        #[arg(long, default_value_t = 90)]
        days: i64,
        /// Also write a docker CLI context (named NAME unless given) for a manager's TLS API,
        /// in $DOCKER_CONFIG or ~/.docker: then `docker --context NAME node ls`
        #[arg(long, value_name = "CONTEXT", num_args = 0..=1, default_missing_value = "")]
        docker_context: Option<String>,
        /// The manager the context talks to (default: the first in `managers`)
        #[arg(long, requires = "docker_context")]
        host: Option<String>,
    },
}

// Long on purpose: one arm per `provision pki` subcommand.
pub fn main(cmd: PkiCmd) -> anyhow::Result<i32> {
    match cmd {
        PkiCmd::Client {
            name,
            inventory,
            state_dir,
            out,
            days,
            docker_context,
            host,
        } => {
            let o = read_options(lab_or(inventory)?, None, state_dir, None);
            // The context's endpoint comes from the inventory: checked before anything is written.
            let endpoint = match &docker_context {
                None => None,
                Some(c) => {
                    let inv = match crate::inventory::Inventory::load(&o.inventory) {
                        Ok(i) => i,
                        Err(e) => {
                            eprintln!("error: {e}");
                            return Ok(exit::INVALID);
                        }
                    };
                    match crate::pki::context::endpoint(&inv, host.as_deref()) {
                        Ok((h, url)) => {
                            let ctx = if c.is_empty() {
                                name.clone()
                            } else {
                                c.clone()
                            };
                            if let Err(e) = crate::pki::context::check_name(&ctx) {
                                eprintln!("error: {e}");
                                return Ok(exit::INVALID);
                            }
                            Some((ctx, h, url))
                        }
                        Err(e) => {
                            eprintln!("error: {e}");
                            return Ok(exit::INVALID);
                        }
                    }
                }
            };
            let dir = o.state_dir();
            let Some(ca) = Ca::load(&State::read_only(&dir)).map_err(anyhow::Error::msg)? else {
                eprintln!(
                    "error: {} has no CA yet: run `provision` on the inventory first",
                    dir.display()
                );
                return Ok(exit::INVALID);
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
            {
                eprintln!("error: client name `{name}`: use letters, digits and - _ . @");
                return Ok(exit::INVALID);
            }
            let (cert, key) = ca.client(&name, days).map_err(anyhow::Error::msg)?;
            std::fs::create_dir_all(&out)?;
            let write = |file: String, body: &str, mode: u32| -> anyhow::Result<()> {
                let p = out.join(file);
                let mut t = tempfile::Builder::new()
                    .permissions(std::fs::Permissions::from_mode(mode))
                    .tempfile_in(&out)?;
                std::io::Write::write_all(&mut t, body.as_bytes())?;
                t.persist(&p).map_err(|e| e.error)?;
                Ok(())
            };
            write(format!("{name}.key"), &key, 0o600)?;
            write(format!("{name}.crt"), &cert, 0o644)?;
            write("ca.crt".into(), &ca.cert_pem, 0o644)?;
            out!(
                "wrote {0}/{name}.crt, {0}/{name}.key (0600) and {0}/ca.crt, valid {days} days",
                out.display()
            );
            if let Some((ctx, h, url)) = endpoint {
                let dir = crate::pki::context::docker_config().map_err(anyhow::Error::msg)?;
                let p = crate::pki::context::write(&dir, &ctx, &url, &ca.cert_pem, &cert, &key)?;
                out!(
                    "docker context `{ctx}`: {url} ({h}), in {}\n  docker --context {ctx} node ls\n  \
                     (the firewall admits the API only from `firewall_docker_api_sources`)",
                    p.display()
                );
            }
            Ok(exit::OK)
        }
        PkiCmd::Status {
            inventory,
            limit,
            state_dir,
            output,
            ssh_config,
        } => {
            let o = read_options(lab_or(inventory)?, limit, state_dir, ssh_config);
            let mut p = match crate::engine::prepare(&o) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(exit::INVALID);
                }
            };
            let ca = Ca::load(&State::read_only(&o.state_dir())).map_err(anyhow::Error::msg)?;
            if ca.is_none() {
                eprintln!(
                    "warning: {} has no CA: no certificate can be checked against it",
                    o.state_dir().display()
                );
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let interactive = std::fs::File::open("/dev/tty").is_ok();
            if let Err(e) = rt.block_on(p.unlock(interactive, None)) {
                eprintln!("error: {e}");
                return Ok(exit::INVALID);
            }
            let results = rt.block_on(crate::engine::read_all(&p, &o, |h| {
                crate::pki::list_script(
                    h.vars
                        .get("pki_dir")
                        .and_then(Value::as_str)
                        .unwrap_or("/etc/provision/pki"),
                )
            }));
            let now = crate::pki::now();
            let (mut bad, mut broken) = (0, 0);
            let json_mode = matches!(output, OutputMode::Json);
            if !json_mode {
                out!(
                    "{:<12} {:<36} {:>5}  {:<8} NAMES",
                    "HOST",
                    "CERTIFICATE",
                    "DAYS",
                    "ISSUER"
                );
            }
            for (h, r) in &results {
                match r {
                    Err(e) => {
                        broken += 1;
                        if json_mode {
                            out!("{}", json!({"host": h, "error": e.message}));
                        } else {
                            out!("{h:<12} ERROR {e}");
                        }
                    }
                    Ok(listing) => {
                        let rows = crate::pki::rows(
                            listing,
                            ca.as_ref().map(|c| c.cert_pem.as_str()),
                            now,
                        );
                        bad += rows.iter().filter(|r| !r.healthy()).count();
                        if json_mode {
                            out!("{}", json!({"host": h, "certificates": rows}));
                            continue;
                        }
                        if rows.is_empty() {
                            out!("{h:<12} (no certificates)");
                        }
                        for r in rows {
                            let issuer = match (&r.error, r.issuer_ok) {
                                (Some(_), _) => "UNREADABLE",
                                (None, true) => "ok",
                                (None, false) => "FOREIGN",
                            };
                            out!(
                                "{h:<12} {:<36} {:>5}  {:<8} {}{}",
                                r.file,
                                r.days_left,
                                issuer,
                                r.sans.join(","),
                                if r.expiring {
                                    "  (due for renewal)"
                                } else {
                                    ""
                                }
                            );
                        }
                    }
                }
            }
            Ok(if broken > 0 {
                exit::UNREACHABLE
            } else if bad > 0 || ca.is_none() {
                exit::DRIFT
            } else {
                exit::OK
            })
        }
    }
}
