//! Role hooks: what a role checks on the controller before any host is contacted.
//! One table, so a role plugs in here instead of by name inside the engine.

use crate::hardening::Rule;
use crate::transport::Target;

type Validate = fn(&[Rule], &Target) -> Result<(), String>;

const HOOKS: &[(&str, Validate)] = &[
    // Hardening must never lock provision out (AllowUsers without the login user, ...).
    ("hardening", |rules, t| {
        crate::hardening::lockout(rules, &t.user)
    }),
];

pub fn validate(role: &str, rules: &[Rule], target: &Target) -> Result<(), String> {
    match HOOKS.iter().find(|(r, _)| *r == role) {
        Some((_, f)) => f(rules, target),
        None => Ok(()),
    }
}
