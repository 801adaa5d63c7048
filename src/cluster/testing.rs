//! For the steps' plan tests: members, a controller context, captured probe outputs.

use super::{Ctx, Member, Seen};
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
