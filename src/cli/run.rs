//! `provision [INVENTORY]`: the run itself.

use super::{exit, lab_or, OutputMode, RunArgs};
use std::path::PathBuf;
use std::sync::Arc;

pub fn main(inventory: Option<PathBuf>, a: RunArgs) -> anyhow::Result<i32> {
    let on_lab = inventory.is_none();
    let inventory = lab_or(inventory)?;
    if a.rotate_ca {
        return rotate_ca(inventory, &a);
    }
    let code = once(inventory.clone(), &a)?;
    if on_lab && code == exit::OK && !a.check && matches!(a.output, OutputMode::Text) {
        let lab = crate::lab::Lab::new(crate::lab::default_dir(), crate::lab::default_cache());
        eprintln!();
        for line in crate::lab::where_to_look(&lab, &inventory) {
            eprintln!("{line}");
        }
    }
    Ok(code)
}

/// `--rotate-ca`: each phase is a whole run that must succeed on every host before the
/// next begins; the phase reached is kept in the state directory.
fn rotate_ca(inventory: PathBuf, a: &RunArgs) -> anyhow::Result<i32> {
    use crate::pki::rotation;
    let state_dir = a
        .state_dir
        .clone()
        .unwrap_or_else(|| crate::state::default_dir(&inventory));
    let name = inventory
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let step = |f: &dyn Fn(&crate::state::State) -> Result<Option<rotation::Phase>, String>| {
        let st = crate::state::State::lock(&state_dir)?;
        f(&st)
    };
    let mut phase = match step(&|st| rotation::begin(st, &name).map(Some)) {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(exit::OK),
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("nothing was changed: no host was contacted");
            return Ok(exit::INVALID);
        }
    };
    loop {
        eprintln!(
            "CA rotation, phase {} of 3 ({}): {}",
            phase.number(),
            phase.name(),
            phase.what()
        );
        let code = once(inventory.clone(), a)?;
        if code != exit::OK {
            eprintln!(
                "error: CA rotation stopped in phase {} ({}): the run did not succeed on every host;                  fix what it reports and run again with --rotate-ca to go on from this phase",
                phase.number(),
                phase.name()
            );
            return Ok(code);
        }
        match step(&|st| rotation::advance(st, phase)) {
            Ok(Some(p)) => phase = p,
            Ok(None) => {
                eprintln!("CA rotation done: every host trusts the new CA alone and holds certificates it signed");
                return Ok(exit::OK);
            }
            Err(e) => {
                eprintln!("error: CA rotation: {e}");
                return Ok(exit::FAILED);
            }
        }
    }
}

// Long on purpose: one run's phases in order (validate, lock, connect, run, report).
fn once(inventory: PathBuf, a: &RunArgs) -> anyhow::Result<i32> {
    let a = a.clone();
    let remove_wait = a.remove_wait;
    let opts = crate::engine::Options {
        inventory,
        playbook: a.playbook,
        roles_dir: a.roles,
        limit: a.limit,
        tags: a.tags,
        skip_tags: a.skip_tags,
        check: a.check,
        diff: a.diff,
        forks: a.forks as usize,
        accept_new_host_keys: a.accept_new_host_keys,
        connect_timeout: std::time::Duration::from_secs(a.connect_timeout),
        command_timeout: std::time::Duration::from_secs(a.command_timeout),
        any_errors_fatal: a.any_errors_fatal,
        max_fail_percentage: a.max_fail_percentage,
        ssh_config: a.ssh_config.clone(),
        state_dir: a.state_dir.clone(),
        new_ca: a.new_ca,
        lock_wait: std::time::Duration::from_secs(a.lock_timeout),
        lockout_check: !(a.list_hosts || a.list_tasks),
    };
    let mut prepared = match crate::engine::prepare(&opts) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("nothing was changed: no host was contacted");
            return Ok(exit::INVALID);
        }
    };
    if a.list_hosts {
        for h in &prepared.hosts {
            out!("{h}");
        }
        return Ok(exit::OK);
    }
    if a.list_tasks {
        for crate::engine::PlannedPlay { play, hosts, .. } in &prepared.plays {
            out!("play {} ({} hosts)", play.name, hosts.len());
            for r in &play.roles {
                for t in &r.tasks {
                    out!(
                        "  {} : {}{}",
                        r.name,
                        t.name,
                        if t.tags.is_empty() {
                            String::new()
                        } else {
                            format!(" [{}]", t.tags.join(", "))
                        }
                    );
                }
            }
        }
        return Ok(exit::OK);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let interactive = std::fs::File::open("/dev/tty").is_ok();
    let become_pass = if a.ask_become_pass {
        Some(
            rpassword::prompt_password("BECOME password: ").map_err(|e| {
                anyhow::anyhow!(
                    "--ask-become-pass: cannot read the password from the terminal: {e}"
                )
            })?,
        )
    } else {
        None
    };
    if let Err(e) = rt.block_on(prepared.unlock(interactive, become_pass)) {
        eprintln!("error: {e}");
        eprintln!("nothing was changed: no host was contacted");
        return Ok(exit::INVALID);
    }
    let mode = match a.output {
        OutputMode::Text => crate::output::Mode::Text,
        OutputMode::Json => crate::output::Mode::Json,
    };
    let progress = crate::output::Progress::from(a.progress);
    // One connection per host stays open for the whole run.
    if let Err(e) = crate::sys::raise_nofile(prepared.hosts.len() as u64 + 64) {
        eprintln!("error: {e}");
        eprintln!("nothing was changed: no host was contacted");
        return Ok(exit::INVALID);
    }
    let rep = Arc::new(crate::output::Reporter::with_progress(
        mode,
        a.verbose,
        &prepared.hosts,
        progress,
    ));
    let mut hidden = Vec::new();
    for h in prepared.inventory.hosts.values() {
        crate::output::secret_values(
            &serde_json::Value::Object(h.vars.clone()),
            false,
            &mut hidden,
        );
    }
    hidden.extend(crate::vault::revealed());
    rep.hide(hidden);
    if a.timings {
        rep.show_timings();
    }
    if let Some(p) = prepared
        .targets
        .values()
        .find_map(|t| t.become_pass.clone())
    {
        rep.hide([p.0.clone()]);
    }
    for w in &prepared.inventory.warnings {
        rep.warn(w);
    }
    // The state directory: locked for a run that changes hosts, only read by --check.
    let state_dir = opts.state_dir();
    let state = if opts.check {
        crate::state::State::read_only(&state_dir)
    } else {
        match crate::state::State::lock(&state_dir) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                eprintln!("nothing was changed: no host was contacted");
                return Ok(exit::LOCKED);
            }
        }
    };
    let check = opts.check;
    if let Some(code) = retire(&prepared, &state, &opts, remove_wait, &rt) {
        return Ok(code);
    }
    rt.block_on(async { crate::interrupt::install(|m| eprintln!("\n{m}")) });
    let summary = rt.block_on(crate::engine::execute(
        prepared,
        opts,
        rep.clone(),
        Arc::new(state),
    ));
    let rows: Vec<(String, crate::output::Tally)> = summary.tallies.clone().into_iter().collect();
    rep.recap(&rows, check, summary.connections);
    if crate::interrupt::requested() {
        rep.warn("INTERRUPTED: the run was stopped before it finished (commands running on the hosts were stopped); run it again to finish");
        return Ok(crate::interrupt::EXIT);
    }
    let code = if rows.iter().any(|(_, t)| t.unreachable > 0) {
        exit::UNREACHABLE
    } else if rows.iter().any(|(_, t)| t.failed > 0) {
        exit::FAILED
    } else {
        exit::OK
    };
    Ok(code)
}

/// The hosts marked `provision_state: absent` taken out of the cluster before the plays
/// (which then leave them out of every firewall, /etc/hosts and target list). Some exit
/// code when the run must stop.
fn retire(
    p: &crate::engine::Prepared,
    state: &crate::state::State,
    opts: &crate::engine::Options,
    remove_wait: u64,
    rt: &tokio::runtime::Runtime,
) -> Option<i32> {
    use crate::day2::{retire, retire_plan};
    if !opts.check {
        if let Err(e) = retire::forget_returned(p, state) {
            eprintln!("error: {e}");
            return Some(exit::FAILED);
        }
    }
    if p.inventory.retired.is_empty() {
        return None;
    }
    let done: std::collections::HashSet<String> = retire::recorded(state).keys().cloned().collect();
    if opts.limit.is_some() {
        let pending: Vec<&String> = p
            .inventory
            .retired
            .keys()
            .filter(|h| !done.contains(*h))
            .collect();
        if !pending.is_empty() {
            eprintln!(
                "warning: {} marked provision_state: absent: removed only by a run without --limit",
                pending
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        return None;
    }
    if let Err(e) = retire_plan::validate(p, &done) {
        eprintln!("error: {e}");
        eprintln!("refused: nothing was changed, no host was contacted");
        return Some(exit::INVALID);
    }
    let o = retire::Opts {
        check: opts.check,
        wait: std::time::Duration::from_secs(remove_wait),
    };
    let out = rt.block_on(retire::run(p, state, &o));
    if opts.check && !out.plan.is_empty() {
        out!("removal plan (nothing changed):");
        for l in &out.plan {
            out!("  {l}");
        }
    }
    for d in &out.done {
        out!(
            "removed {}: {:.1} s, {:.1} s of it waiting for the cluster ({} steps)",
            d.node,
            d.seconds,
            d.waited,
            d.changes.len()
        );
    }
    match out.stopped {
        None => None,
        Some((why, msg)) => {
            eprintln!("error: {msg}");
            Some(match why {
                retire::Why::Unreachable => exit::UNREACHABLE,
                retire::Why::Failed => exit::FAILED,
            })
        }
    }
}
