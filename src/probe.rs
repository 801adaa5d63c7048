//! Reading a host's state: the sections a probe script prints, a remote file's state,
//! content hashes. Shared by host modules, cluster steps, the PKI and the audit.

use crate::transport::quote as q;
use base64::Engine;
use indexmap::IndexMap;

/// Section `k` read as JSON (null when absent or not JSON).
pub fn json(sec: &IndexMap<String, String>, k: &str) -> serde_json::Value {
    sec.get(k)
        .and_then(|x| serde_json::from_str(x.trim()).ok())
        .unwrap_or_default()
}

/// Splits `out` into the sections a probe printed after `==NAME` marker lines.
pub fn sections(out: &str) -> IndexMap<String, String> {
    let mut m: IndexMap<String, String> = IndexMap::new();
    let mut cur: Option<String> = None;
    for line in out.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("==PROVISION ") {
            let name = name.trim().to_owned();
            m.entry(name.clone()).or_default();
            cur = Some(name);
        } else if let Some(c) = &cur {
            if let Some(s) = m.get_mut(c) {
                s.push_str(line);
            }
        }
    }
    m
}

/// The state of one remote file as read by `probe_file`.
pub struct FileState {
    pub exists: bool,
    pub mode: String,
    pub owner: String,
    pub group: String,
    pub content: String,
    /// For a large file, only its sha256 is read (see `probe_file_sized`).
    pub sha: Option<String>,
}

/// Above this size a file is compared by its hash, not read back (and shown in no diff).
pub const BIG: usize = 64 * 1024;

/// Like `probe_file`, but a file meant to hold more than 64 KiB is hashed on the host.
pub fn probe_file_sized(path: &str, wanted_len: usize) -> String {
    if wanted_len <= BIG {
        return probe_file(path);
    }
    let p = q(path);
    format!("if [ -f {p} ]; then stat -c 'E %a %U %G' {p} && printf 'H:' && sha256sum {p} | cut -c1-64; else echo N; fi")
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

pub fn probe_file(path: &str) -> String {
    let p = q(path);
    format!("if [ -f {p} ]; then stat -c 'E %a %U %G' {p} && base64 -w0 {p}; echo; else echo N; fi")
}

pub fn parse_file(out: &str) -> FileState {
    let mut lines = out.lines();
    let head: Vec<&str> = lines.next().unwrap_or("N").split_whitespace().collect();
    if head.first() != Some(&"E") || head.len() < 4 {
        return FileState {
            exists: false,
            mode: String::new(),
            owner: String::new(),
            group: String::new(),
            content: String::new(),
            sha: None,
        };
    }
    let second = lines.next().unwrap_or("").trim();
    if let Some(h) = second.strip_prefix("H:") {
        return FileState {
            exists: true,
            mode: head[1].to_owned(),
            owner: head[2].to_owned(),
            group: head[3].to_owned(),
            content: String::new(),
            sha: Some(h.to_owned()),
        };
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(second)
        .unwrap_or_default();
    FileState {
        exists: true,
        mode: head[1].to_owned(),
        owner: head[2].to_owned(),
        group: head[3].to_owned(),
        content: String::from_utf8_lossy(&raw).into_owned(),
        sha: None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sections_split_on_markers() {
        let s = super::sections("junk\n==PROVISION a\nx\ny\n==PROVISION b\n==PROVISION c\nz");
        assert_eq!(s["a"], "x\ny\n");
        assert_eq!(s["b"], "");
        assert_eq!(s["c"], "z");
        assert_eq!(s.len(), 3);
    }
}
