//! Cluster steps: tasks that see every host of a play at once. A step probes the hosts
//! it needs, plans across all of them, and the engine applies the plan and probes again
//! until nothing is left to do (engine::cluster). Hosts outside `--limit` may be read,
//! never changed: the engine refuses any action on them.

pub mod audit;
pub mod ceph;
pub mod etcd;
pub mod labels;
pub mod networks;
pub mod share;
pub mod stacks;
pub mod swarm;
#[cfg(test)]
pub mod testing;
pub mod tls;

use crate::state::State;
use crate::transport::Output;
use indexmap::IndexMap;
use serde_json::{Map, Value};

/// One host taking part in a cluster step.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    /// The task's arguments rendered with this host's variables.
    pub args: Map<String, Value>,
    /// In the play and inside `--limit`; the others are only read.
    pub writable: bool,
    /// Who the step's commands run as on this host (None: the login user).
    pub user: Option<String>,
    /// Why the host takes no live part (unreachable, failed earlier): it is unknown, not
    /// gone. Counted in sizes and member lists, never probed, never changed.
    pub down: Option<String>,
}

impl Member {
    pub fn is_down(&self) -> bool {
        self.down.is_some()
    }
}

/// The members that are down, with why: "node2 (unreachable)".
pub fn down_list(members: &[Member]) -> Vec<String> {
    members
        .iter()
        .filter_map(|m| m.down.as_ref().map(|w| format!("{} ({w})", m.name)))
        .collect()
}

/// What each probed host returned; Err when it could not be asked.
pub type Seen = IndexMap<String, Result<Output, String>>;

/// A step's default bound on probe, plan and apply rounds.
pub const MAX_ROUNDS: usize = 12;

/// One change to one host. It runs on `host` itself, or on `run_on` (a manager that
/// changes the host's swarm node); either way `host` must be inside `--limit`.
#[derive(Clone, Debug)]
pub struct Action {
    pub host: String,
    pub run_on: Option<String>,
    /// What it does, for the output ("sign a certificate for node3"); never a secret.
    pub msg: String,
    pub script: String,
    pub stdin: Option<Vec<u8>>,
    /// Quorum-sensitive: run alone, then probe again before the next one.
    pub serial: bool,
}

/// What a step may use on the controller.
pub struct Ctx<'a> {
    pub state: &'a State,
    pub inventory: &'a crate::inventory::Inventory,
    pub check: bool,
    /// `--new-ca`: replace a lost CA instead of refusing.
    pub new_ca: bool,
}

pub trait Step: Send + Sync {
    /// Checks the members' arguments; nothing has run yet.
    fn prepare(&mut self, members: &[Member], cx: &Ctx) -> Result<(), String>;
    /// Whether the step also reads play hosts outside `--limit` (a join token on a manager).
    fn reads_outside_limit(&self) -> bool {
        false
    }
    /// Whether the play's hosts that are down take part as down members (counted in
    /// sizes and member lists). Steps that only act host by host do without them.
    fn counts_down_hosts(&self) -> bool {
        false
    }
    /// A read-only script per host to probe.
    fn probes(&self, members: &[Member]) -> Vec<(String, String)>;
    /// The changes still needed, from what the probes saw. Runs on the controller and may
    /// do controller-side work (signing a CSR); in check mode it must not write state.
    fn plan(&mut self, members: &[Member], seen: &Seen, cx: &Ctx) -> Result<Vec<Action>, String>;
    /// After an empty plan: probe again (the step needs to read more before it can decide,
    /// such as a join token once it knows a node must join). Bounded by the loop's rounds.
    fn wants_reprobe(&self) -> bool {
        false
    }
    /// Rounds of probe, plan and apply before the step gives up; a step that waits for a
    /// cluster to settle bounds its wait by time instead.
    fn max_rounds(&self) -> usize {
        MAX_ROUNDS
    }
    /// What the operator should know but nothing changes for (a node unknown to the inventory).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// Values read or made that must never be printed (tokens, keys).
    fn secrets(&self) -> Vec<String> {
        Vec::new()
    }
    /// Published to every host's later tasks under the task's `register` name.
    fn publish(&self) -> Value {
        Value::Null
    }
    /// A read-only script to run every second while `action` runs; its output, one line,
    /// is shown as the action's progress (tasks running / wanted while a stack converges).
    fn watch(&self, _action: &Action) -> Option<String> {
        None
    }
}

/// An action that fails its host with `why` (a plain statement, shown as the failure)
/// and changes nothing: a step's refusal of something it must not do.
pub fn refusal(host: &str, why: String) -> Action {
    Action {
        host: host.to_owned(),
        run_on: None,
        msg: why,
        script: "echo 'refused: nothing was changed' >&2; exit 3".into(),
        stdin: None,
        serial: false,
    }
}

/// A script line writing `content` to `path` atomically (in the script, not on stdin,
/// so one action may write several files). Not for secrets: scripts can be shown.
pub fn put_inline(path: &str, content: &str, mode: &str, owner: &str, group: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(content);
    format!(
        "echo {b64} | base64 -d | ( {} ) || exit 1\n",
        crate::transport::put_script(path, mode, Some(owner), Some(group)),
    )
}

/// A string argument of a member.
pub fn arg(m: &Member, k: &str) -> Result<Option<String>, String> {
    crate::args::Args(&m.args)
        .str(k)
        .map_err(|e| format!("host `{}`: {e}", m.name))
}

pub use crate::probe::sections;
