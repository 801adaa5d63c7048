//! For the steps' plan tests: members, a controller context, captured probe outputs.

use super::{Action, Ctx, Member, Seen, Step};
use crate::transport::Output;

pub fn members(names: &[&str], writable: &[&str]) -> Vec<Member> {
    names
        .iter()
        .map(|n| Member {
            name: n.to_string(),
            args: Default::default(),
            writable: writable.contains(n),
            user: None,
            down: None,
        })
        .collect()
}

/// `down` marks members as unreachable (down members: counted, never probed).
pub fn with_down(mut m: Vec<Member>, down: &[&str]) -> Vec<Member> {
    for x in &mut m {
        if down.contains(&x.name.as_str()) {
            x.down = Some("unreachable".into());
            x.writable = false;
        }
    }
    m
}

pub fn with_ctx<T>(check: bool, f: impl FnOnce(&Ctx) -> T) -> T {
    let d = tempfile::tempdir().unwrap();
    let state = crate::state::State::read_only(d.path());
    let inv = crate::inventory::Inventory::default();
    f(&Ctx {
        state: &state,
        inventory: &inv,
        check,
        new_ca: false,
    })
}

/// What each host's probe printed (exit 0).
pub fn seen(outs: &[(&str, String)]) -> Seen {
    outs.iter()
        .map(|(h, o)| {
            (
                h.to_string(),
                Ok(Output {
                    rc: 0,
                    stdout: o.clone(),
                    stderr: String::new(),
                }),
            )
        })
        .collect()
}

/// A writable (or read-only) member with these arguments.
pub fn member(name: &str, args: serde_json::Value, writable: bool) -> Member {
    Member {
        name: name.into(),
        args: args.as_object().cloned().unwrap_or_default(),
        writable,
        user: None,
        down: None,
    }
}

/// Prepares `step` for `ms`, then plans one round from the probe outputs.
pub fn plan_once(
    step: &mut dyn Step,
    ms: &[Member],
    outs: &[(&str, String)],
) -> Result<Vec<Action>, String> {
    with_ctx(false, |cx| {
        step.prepare(ms, cx)?;
        step.plan(ms, &seen(outs), cx)
    })
}

/// The single action planned, checked to run on `host` through `via`.
pub fn only_action<'a>(a: &'a [Action], host: &str, via: &str) -> &'a Action {
    let msgs: Vec<&str> = a.iter().map(|a| a.msg.as_str()).collect();
    assert_eq!(a.len(), 1, "{msgs:?}");
    assert_eq!(
        (a[0].host.as_str(), a[0].run_on.as_deref()),
        (host, Some(via))
    );
    &a[0]
}
