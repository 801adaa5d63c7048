//! The SSH transport: one russh connection per host, a channel per command,
//! host keys always verified, files put in place atomically.

mod auth;
mod hostkeys;
pub mod sshconfig;

use russh::client::{self, Handle};
use russh::ChannelMsg;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use thiserror::Error;

pub use auth::Keys;
pub use hostkeys::HostKeyPolicy;

/// SSH connections opened by this process (for benchmarks and tests).
pub static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// How to reach one host.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub key_files: Vec<PathBuf>,
    /// Only offer agent keys that match `key_files` (IdentitiesOnly).
    pub identities_only: bool,
    /// A bastion to tunnel through (ProxyJump).
    pub jump: Option<Box<Target>>,
    pub hostkeys: HostKeyPolicy,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub keys: Arc<Keys>,
    /// The sudo password (--ask-become-pass); used only where sudo asks for one.
    pub become_pass: Option<Arc<Secret>>,
}

/// A password that never shows in Debug output or logs.
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

impl Target {
    /// `user@address:port`, also the key of shared bastion connections.
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.user, self.address, self.port)
    }
}

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        addr: String,
        reason: String,
        /// Refused or reset: the host answered and may take us on a retry. A timeout or
        /// a missing route is not retried: a silent host costs one connect timeout, once.
        transient: bool,
    },
    #[error("{0}")]
    HostKey(String),
    #[error("authentication as `{user}` failed: {reason}")]
    Auth { user: String, reason: String },
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
    #[error("ssh: {0}")]
    Protocol(String),
    #[error("connection to {host} lost ({reason})")]
    Lost { host: String, reason: String },
    #[error("interrupted: the command was stopped on {host}")]
    Interrupted { host: String },
}

impl TransportError {
    /// The host was reached once but the connection is gone (counts as unreachable).
    pub fn is_lost(&self) -> bool {
        matches!(self, TransportError::Lost { .. })
    }

    /// Connection failures worth retrying (never host-key or auth failures).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            TransportError::Unreachable {
                transient: true,
                ..
            }
        )
    }
}

/// What a command returned.
#[derive(Clone, Debug, Default)]
pub struct Output {
    pub rc: i32,
    pub stdout: String,
    pub stderr: String,
}

struct Client {
    target: Arc<Target>,
    verdict: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = &key.public_key();
        let t = &self.target;
        match t.hostkeys.check(&t.address, t.port, key) {
            Ok(()) => Ok(true),
            Err(msg) => {
                *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
                Ok(false)
            }
        }
    }
}

/// One authenticated connection to a host.
pub struct Conn {
    handle: Handle<Client>,
    pub target: Arc<Target>,
    commands: AtomicU64,
    /// Set when sudo on this host wants the become password.
    sudo_pass: AtomicBool,
    /// Channels kept open for the life of the connection (the host lock).
    held: tokio::sync::Mutex<Vec<russh::Channel<client::Msg>>>,
}

/// Bastion connections, shared by every host behind the same one.
fn bastions() -> &'static tokio::sync::Mutex<HashMap<String, Arc<Conn>>> {
    static B: OnceLock<tokio::sync::Mutex<HashMap<String, Arc<Conn>>>> = OnceLock::new();
    B.get_or_init(Default::default)
}

async fn bastion(t: &Target) -> Result<Arc<Conn>, TransportError> {
    let mut map = bastions().lock().await;
    if let Some(c) = map.get(&t.label()) {
        return Ok(c.clone());
    }
    let c = Arc::new(
        Box::pin(Conn::connect(t.clone()))
            .await
            .map_err(|e| match e {
                TransportError::Unreachable {
                    addr,
                    reason,
                    transient,
                } => TransportError::Unreachable {
                    addr: format!("bastion {addr}"),
                    reason,
                    transient,
                },
                TransportError::Auth { user, reason } => TransportError::Auth {
                    user: format!("{user} on bastion {}", t.address),
                    reason,
                },
                other => other,
            })?,
    );
    map.insert(t.label(), c.clone());
    Ok(c)
}

/// Handshakes (TCP connect, key exchange, authentication) under way at once.
pub const MAX_HANDSHAKES: usize = 32;
static HANDSHAKES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_HANDSHAKES);

impl Conn {
    /// Connects, verifies the host key and authenticates, retrying only unreachable hosts
    /// (a refused or reset handshake too), after a growing, jittered pause.
    pub async fn connect(target: Target) -> Result<Conn, TransportError> {
        let mut last = None;
        let jitter = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&target.address, target.port).hash(&mut h);
            h.finish() % 400
        };
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * attempt + jitter)).await;
            }
            match Self::connect_once(target.clone()).await {
                Ok(c) => return Ok(c),
                Err(e) if e.retryable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| TransportError::Protocol("no connection attempt".into())))
    }

    // Long on purpose: the SSH handshake in protocol order (TCP, host key check, each auth method).
    async fn connect_once(target: Target) -> Result<Conn, TransportError> {
        let target = Arc::new(target);
        let mut config = client::Config {
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        };
        // Ask first for the key types known_hosts has for this host, as OpenSSH does.
        let known = target
            .hostkeys
            .known_algorithms(&target.address, target.port);
        if !known.is_empty() {
            let mut keys: Vec<russh::keys::Algorithm> = known.clone();
            keys.extend(
                config
                    .preferred
                    .key
                    .iter()
                    .filter(|a| !known.contains(a))
                    .cloned(),
            );
            config.preferred.key = std::borrow::Cow::Owned(keys);
        }
        let config = Arc::new(config);
        let verdict = Arc::new(Mutex::new(None));
        let handler = Client {
            target: target.clone(),
            verdict: verdict.clone(),
        };
        let addr = format!("{}:{}", target.address, target.port);
        let unreachable = |reason: String| TransportError::Unreachable {
            addr: addr.clone(),
            reason,
            transient: false,
        };
        let transient = |reason: String| TransportError::Unreachable {
            addr: addr.clone(),
            reason,
            transient: true,
        };
        // Key exchanges are CPU work on both sides: a bounded number at once keeps a run
        // over hundreds of hosts from starving the controller (and a bastion's MaxStartups).
        // Taken after the bastion's own connection, which needs one too.
        let _pace;
        let handshake = if let Some(j) = &target.jump {
            let b = bastion(j).await?;
            _pace = HANDSHAKES.acquire().await;
            let ch = b
                .handle
                .channel_open_direct_tcpip(
                    target.address.clone(),
                    target.port as u32,
                    "127.0.0.1",
                    0,
                )
                .await
                .map_err(|e| {
                    unreachable(format!("bastion {} cannot open a tunnel: {e}", j.address))
                })?;
            tokio::time::timeout(
                target.connect_timeout,
                client::connect_stream(config, ch.into_stream(), handler),
            )
            .await
        } else {
            _pace = HANDSHAKES.acquire().await;
            let stream = tokio::time::timeout(
                target.connect_timeout,
                tokio::net::TcpStream::connect(&addr),
            )
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", target.connect_timeout)))?
            .map_err(|e| {
                use std::io::ErrorKind::*;
                match e.kind() {
                    ConnectionRefused | ConnectionReset | ConnectionAborted => {
                        transient(e.to_string())
                    }
                    _ => unreachable(e.to_string()),
                }
            })?;
            let _ = stream.set_nodelay(true);
            tokio::time::timeout(
                target.connect_timeout,
                client::connect_stream(config, stream, handler),
            )
            .await
        };
        let mut handle = match handshake {
            Err(_) => return Err(unreachable("SSH handshake timed out".into())),
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                if let Some(msg) = verdict.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    return Err(TransportError::HostKey(msg));
                }
                // Reset or closed during the handshake (sshd's MaxStartups): worth a retry.
                return Err(transient(format!("SSH handshake failed: {e}")));
            }
        };
        CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        let mut tried = Vec::new();
        let ok = auth::authenticate(
            &mut handle,
            &target.user,
            &target.key_files,
            target.identities_only,
            &target.keys,
            &mut tried,
        )
        .await
        .map_err(|e| TransportError::Protocol(e.to_string()))?;
        if ok {
            return Ok(Conn {
                handle,
                target,
                commands: AtomicU64::new(0),
                sudo_pass: AtomicBool::new(false),
                held: Default::default(),
            });
        }
        let reason = if tried.is_empty() {
            "no key to try: set ansible_ssh_private_key_file, IdentityFile in ~/.ssh/config, or load a key into ssh-agent".to_string()
        } else {
            format!("tried {}", tried.join("; "))
        };
        Err(TransportError::Auth {
            user: target.user.clone(),
            reason,
        })
    }

    /// Commands run on this connection so far (each is one round trip).
    pub fn commands(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
    }

    /// Makes sudo on this host read the become password (sudo -S) from now on.
    pub fn use_sudo_password(&self) {
        self.sudo_pass.store(true, Ordering::Relaxed);
    }

    /// Runs `script` with `sh`, through sudo as `become` when it is set.
    pub async fn run(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        as_user: Option<&str>,
    ) -> Result<Output, TransportError> {
        let pass = match (&self.target.become_pass, as_user) {
            (Some(p), Some(_)) if self.sudo_pass.load(Ordering::Relaxed) => Some(p.clone()),
            _ => None,
        };
        let marker = format!(
            "provision-cmd-{}-{}",
            std::process::id(),
            CMD_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let cmd = wrap(script, as_user, pass.is_some(), &marker);
        let mut input;
        let stdin = match &pass {
            Some(p) => {
                input = format!("{}\n", p.0).into_bytes();
                input.extend_from_slice(stdin.unwrap_or_default());
                Some(input.as_slice())
            }
            None => stdin,
        };
        let timeout = self.target.command_timeout;
        if crate::interrupt::requested() {
            return Err(TransportError::Interrupted {
                host: self.target.name.clone(),
            });
        }
        tokio::select! {
            r = tokio::time::timeout(timeout, self.exec(&cmd, stdin)) => {
                r.map_err(|_| TransportError::Timeout(timeout))?
            }
            _ = crate::interrupt::wait() => {
                self.stop_remote(&marker).await;
                Err(TransportError::Interrupted { host: self.target.name.clone() })
            }
        }
    }

    /// Stops a command started by `run` (its whole SSH session: the shell, sudo and what
    /// they started) from a new channel: TERM, then KILL after 3 s.
    async fn stop_remote(&self, marker: &str) {
        let script = format!(
            r#"S=; [ "$(id -u)" = 0 ] || {{ sudo -n true 2>/dev/null && S="sudo -n"; }}
sids=; for p in $(pgrep -f -- ' {marker}$'); do sids="$sids $(ps -o sid= -p "$p")"; done
[ -n "$sids" ] || exit 0
for s in $sids; do $S pkill -TERM -s "$s"; done
for i in 1 2 3 4 5 6; do sleep 0.5; left=; for s in $sids; do pgrep -s "$s" >/dev/null && left=1; done; [ -n "$left" ] || exit 0; done
for s in $sids; do $S pkill -KILL -s "$s"; done; true"#
        );
        let _ = tokio::time::timeout(Duration::from_secs(10), self.exec(&script, None)).await;
    }

    /// A channel error on a connection that is gone (closed, reset, keepalive unanswered)
    /// is a lost connection, the host unreachable; anything else a protocol error.
    fn lost_or(&self, e: russh::Error) -> TransportError {
        use russh::Error as E;
        let gone = matches!(
            e,
            E::SendError
                | E::RecvError
                | E::Disconnect
                | E::HUP
                | E::IO(_)
                | E::KeepaliveTimeout
                | E::InactivityTimeout
                | E::ConnectionTimeout
        );
        if gone || self.handle.is_closed() {
            TransportError::Lost {
                host: self.target.name.clone(),
                reason: e.to_string(),
            }
        } else {
            TransportError::Protocol(e.to_string())
        }
    }

    async fn exec(&self, cmd: &str, stdin: Option<&[u8]>) -> Result<Output, TransportError> {
        self.commands.fetch_add(1, Ordering::Relaxed);
        let proto = |e| self.lost_or(e);
        let mut ch = self.handle.channel_open_session().await.map_err(proto)?;
        ch.exec(false, cmd).await.map_err(proto)?;
        if let Some(data) = stdin {
            // A write waits for the host's window; if the connection dies meanwhile no window
            // ever comes: watch the connection, so a dead one is seen within a second (or
            // within the keepalive for a silent one).
            let send = ch.data(data);
            tokio::pin!(send);
            loop {
                tokio::select! {
                    r = &mut send => { r.map_err(proto)?; break; }
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        if self.handle.is_closed() {
                            return Err(TransportError::Lost {
                                host: self.target.name.clone(),
                                reason: "the SSH connection closed during an upload".into(),
                            });
                        }
                    }
                }
            }
        }
        ch.eof().await.map_err(proto)?;
        let (mut out, mut err, mut rc) = (Vec::new(), Vec::new(), None);
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => err.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => rc = Some(exit_status as i32),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    err.extend_from_slice(format!("killed by signal {signal_name:?}").as_bytes());
                    rc = Some(128)
                }
                _ => {}
            }
        }
        let Some(rc) = rc else {
            // The channel ended without an exit status: the connection is gone.
            let reason = if self.handle.is_closed() {
                "the SSH connection closed"
            } else {
                "the command's channel closed without an exit status"
            };
            return Err(TransportError::Lost {
                host: self.target.name.clone(),
                reason: reason.into(),
            });
        };
        Ok(Output {
            rc,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        })
    }

    /// Starts `script` on a channel of its own that stays open as long as the connection
    /// does (a remote lock dies with it). Returns Ok once the script printed `ready`, or
    /// what it printed if it ended first.
    pub async fn hold(
        &self,
        script: &str,
        ready: &str,
    ) -> Result<Result<String, Output>, TransportError> {
        self.commands.fetch_add(1, Ordering::Relaxed);
        let proto = |e| self.lost_or(e);
        let mut ch = self.handle.channel_open_session().await.map_err(proto)?;
        ch.exec(false, wrap(script, None, false, "provision-lock"))
            .await
            .map_err(proto)?;
        let (mut out, mut err, mut rc) = (Vec::new(), Vec::new(), None);
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    out.extend_from_slice(&data);
                    let text = String::from_utf8_lossy(&out);
                    if let Some(i) = text.find(ready) {
                        let before = text[..i].to_owned();
                        self.held.lock().await.push(ch);
                        return Ok(Ok(before));
                    }
                }
                ChannelMsg::ExtendedData { data, .. } => err.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => rc = Some(exit_status as i32),
                _ => {}
            }
        }
        Ok(Err(Output {
            rc: rc.unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        }))
    }

    pub async fn close(&self) {
        self.held.lock().await.clear();
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// What the engine needs of a connection: run a script with stdin as a user. `Conn` is the
/// real one; tests put a fake in its place.
pub trait Remote: Send + Sync {
    fn run_script<'a>(
        &'a self,
        script: &'a str,
        stdin: Option<&'a [u8]>,
        as_user: Option<&'a str>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Output, TransportError>> + Send + 'a>,
    >;
}

impl Remote for Conn {
    fn run_script<'a>(
        &'a self,
        script: &'a str,
        stdin: Option<&'a [u8]>,
        as_user: Option<&'a str>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Output, TransportError>> + Send + 'a>,
    > {
        Box::pin(self.run(script, stdin, as_user))
    }
}

/// Quotes `s` for a POSIX shell.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Numbers the commands of this run, so an interrupted one can be found on its host.
static CMD_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The remote command line; `marker` (the shell's $0) lets an interrupt find it.
fn wrap(script: &str, as_user: Option<&str>, password: bool, marker: &str) -> String {
    let user = match as_user {
        Some(u) if u != "root" => format!("-u {} ", quote(u)),
        _ => String::new(),
    };
    match (as_user, password) {
        // -k: always read the password, so it never reaches the command's stdin.
        (Some(_), true) => format!(
            "sudo -k -S -p '' -H {user}-- sh -c {} {marker}",
            quote(script)
        ),
        (Some(_), false) => format!("sudo -n -H {user}-- sh -c {} {marker}", quote(script)),
        (None, _) => format!("sh -c {} {marker}", quote(script)),
    }
}

/// A shell script that writes its stdin to `path` atomically with the given mode and owner.
pub fn put_script(path: &str, mode: &str, owner: Option<&str>, group: Option<&str>) -> String {
    put_script_checked(path, mode, owner, group, None)
}

/// Like `put_script`, running `validate` (its `%s` is the temp file) before the rename.
pub fn put_script_checked(
    path: &str,
    mode: &str,
    owner: Option<&str>,
    group: Option<&str>,
    validate: Option<&str>,
) -> String {
    put(path, mode, owner, group, validate, None)
}

/// Like `put_script_checked`, and the file is renamed into place only if what arrived on
/// stdin is exactly `content` (length and sha256): an upload cut short keeps the old file.
pub fn put_script_verified(
    path: &str,
    mode: &str,
    owner: Option<&str>,
    group: Option<&str>,
    validate: Option<&str>,
    content: &[u8],
) -> String {
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(content));
    put(
        path,
        mode,
        owner,
        group,
        validate,
        Some((content.len(), sha)),
    )
}

fn put(
    path: &str,
    mode: &str,
    owner: Option<&str>,
    group: Option<&str>,
    validate: Option<&str>,
    expect: Option<(usize, String)>,
) -> String {
    let p = quote(path);
    let mut s = format!(
        "set -e; trap '' PIPE; d=$(dirname {p}); [ -d \"$d\" ] || mkdir -p \"$d\"; t=$(mktemp \"$d/.provision.XXXXXX\"); trap 'rm -f \"$t\"' EXIT; \
         cat > \"$t\"; "
    );
    if let Some((len, sha)) = expect {
        s += &format!(
            "if [ \"$(wc -c < \"$t\")\" -ne {len} ] || [ \"$(sha256sum < \"$t\" | cut -d' ' -f1)\" != {sha} ]; then \
             n=$(wc -c < \"$t\"); rm -f \"$t\"; echo \"the upload of {} arrived incomplete ($n of {len} bytes): the previous file is kept\" >&2; exit 1; fi; ",
            path.replace('"', "")
        );
    }
    s += &format!("chmod {mode} \"$t\"; ");
    match (owner, group) {
        (Some(o), Some(g)) => s += &format!("chown {}:{} \"$t\"; ", quote(o), quote(g)),
        (Some(o), None) => s += &format!("chown {} \"$t\"; ", quote(o)),
        (None, Some(g)) => s += &format!("chgrp {} \"$t\"; ", quote(g)),
        (None, None) => {}
    }
    if let Some(v) = validate {
        s += &format!(
            "if ! out=$({} 2>&1); then echo \"validation refused the new {path}: $out\" >&2; exit 1; fi; ",
            v.replace("%s", "\"$t\"")
        );
    }
    s += &format!("mv -f \"$t\" {p}; trap - EXIT");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The put script run by a real sh: whole content renamed into place, a short one refused.
    #[test]
    fn a_cut_upload_keeps_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("sub/f");
        let run = |script: &str, input: &[u8]| {
            use std::io::Write;
            let mut c = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(input).unwrap();
            c.wait_with_output().unwrap()
        };
        let content = b"new content\n".repeat(1000);
        let script = put_script_verified(dest.to_str().unwrap(), "640", None, None, None, &content);
        assert!(run(&script, &content).status.success());
        assert_eq!(std::fs::read(&dest).unwrap(), content);
        let next = b"next\n".repeat(1000);
        let script = put_script_verified(dest.to_str().unwrap(), "640", None, None, None, &next);
        let cut = run(&script, &next[..1234]);
        assert!(!cut.status.success());
        assert!(String::from_utf8_lossy(&cut.stderr)
            .contains("arrived incomplete (1234 of 5000 bytes)"));
        assert_eq!(std::fs::read(&dest).unwrap(), content, "the old file stays");
        let left: Vec<_> = std::fs::read_dir(d.path().join("sub")).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file left behind");
    }
}
