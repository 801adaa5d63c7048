//! `provision status`: the cluster at a glance (see status.rs).

use super::{exit, lab_or};
use crate::status::Status;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// The inventory (the local lab's when omitted)
    pub inventory: Option<PathBuf>,
    /// text (one screen), json, or markdown (a document of the cluster to keep)
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// OpenSSH client config to honour (default ~/.ssh/config)
    #[arg(long, short = 'F')]
    pub ssh_config: Option<PathBuf>,
    /// The controller's state directory, for the CA that certificates are checked against
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

pub fn main(a: StatusArgs) -> anyhow::Result<i32> {
    let opts = super::read_options(lab_or(a.inventory)?, None, a.state_dir, a.ssh_config);
    let (p, rt) = match super::prepare_for(&opts, "read")? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let ca = crate::pki::Ca::load(&crate::state::State::read_only(&opts.state_dir()))
        .map_err(anyhow::Error::msg)?
        .map(|c| c.cert_pem);
    let results = rt.block_on(crate::engine::read_all(&p, &opts, |h| {
        crate::status::script(&p.inventory, &p.worked, h)
    }));
    let st = crate::status::judge(&results, ca.as_deref(), crate::pki::now());
    match a.output {
        Format::Json => out!("{}", serde_json::to_string_pretty(&st)?),
        Format::Markdown => markdown(&st, &opts.inventory),
        Format::Text => print(&st),
    }
    Ok(if !st.unreachable.is_empty() || !st.errors.is_empty() {
        exit::UNREACHABLE
    } else if !st.problems.is_empty() {
        exit::DRIFT
    } else {
        exit::OK
    })
}

fn print(st: &Status) {
    if !st.nodes.is_empty() {
        out!("NODE         ROLE     STATUS  AVAILABILITY  MANAGER      ENGINE     LABELS");
        for n in &st.nodes {
            out!(
                "{:<12} {:<8} {:<7} {:<13} {:<12} {:<10} {}",
                n.name,
                n.role,
                n.status,
                n.availability,
                n.manager,
                n.engine,
                n.labels
            );
        }
    }
    if let Some(e) = &st.etcd {
        out!("etcd: {e}");
    }
    if let Some(c) = &st.ceph {
        out!("ceph: {c}");
    }
    if !st.services.is_empty() {
        out!("SERVICE                  TASKS  IMAGE");
        for s in &st.services {
            out!("{:<24} {:<6} {}", s.name, s.replicas, s.image);
        }
    }
    if let Some(c) = st.certificates.first() {
        let bad = st.certificates.iter().filter(|c| !c.ok).count();
        out!(
            "certificates: {} on {} hosts, the soonest {} days ({} on {}){}",
            st.certificates.len(),
            {
                let mut h: Vec<&str> = st.certificates.iter().map(|c| c.host.as_str()).collect();
                h.dedup();
                h.len()
            },
            c.days_left,
            c.file,
            c.host,
            if bad > 0 {
                format!(", {bad} not healthy")
            } else {
                String::new()
            }
        );
    }
    for e in &st.errors {
        out!("not read: {e}");
    }
    if !st.unreachable.is_empty() {
        out!(
            "unreachable (unknown, not gone): {}",
            st.unreachable.join(", ")
        );
    }
    if st.problems.is_empty() && st.unreachable.is_empty() && st.errors.is_empty() {
        out!("healthy");
    }
    for p in &st.problems {
        out!("degraded: {p}");
    }
}

/// The same as a markdown document, to keep beside the inventory.
fn markdown(st: &Status, inventory: &std::path::Path) {
    out!("# Cluster status: {}\n", inventory.display());
    out!(
        "Read {} UTC by `provision status`.\n",
        crate::status::utc_now()
    );
    if st.problems.is_empty() && st.unreachable.is_empty() && st.errors.is_empty() {
        out!("**Healthy.**\n");
    }
    for p in &st.problems {
        out!("- **Degraded:** {p}");
    }
    if !st.unreachable.is_empty() {
        out!(
            "- **Unreachable** (unknown, not gone): {}",
            st.unreachable.join(", ")
        );
    }
    if !st.nodes.is_empty() {
        out!("\n## Nodes\n\n| node | role | status | availability | manager | engine | labels |\n|---|---|---|---|---|---|---|");
        for n in &st.nodes {
            out!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                n.name,
                n.role,
                n.status,
                n.availability,
                n.manager,
                n.engine,
                n.labels
            );
        }
    }
    if !st.services.is_empty() {
        out!("\n## Services\n\n| service | tasks | image |\n|---|---|---|");
        for s in &st.services {
            out!("| {} | {} | {} |", s.name, s.replicas, s.image);
        }
    }
    if let Some(e) = &st.etcd {
        out!("\n## etcd\n\n{e}.");
    }
    if let Some(c) = &st.ceph {
        out!("\n## Ceph\n\n{c}.");
    }
    if !st.certificates.is_empty() {
        out!(
            "\n## Certificates\n\n| host | certificate | days left | healthy |\n|---|---|---|---|"
        );
        for c in &st.certificates {
            out!(
                "| {} | {} | {} | {} |",
                c.host,
                c.file,
                c.days_left,
                if c.ok { "yes" } else { "no" }
            );
        }
    }
}
