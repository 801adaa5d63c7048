//! YAML with a location on every node, so every error can name file:line:column.

use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, YamlDataOwned};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<PathBuf>,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

impl Loc {
    pub fn file_only(file: &Path) -> Loc {
        Loc {
            file: Arc::new(file.to_path_buf()),
            line: 1,
            col: 1,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub loc: Loc,
}

/// An error at a place in a file, with what to do about it.
#[derive(Debug, Clone)]
pub struct Located {
    pub loc: Loc,
    pub msg: String,
    pub hint: Option<String>,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.loc, self.msg)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Located {}

pub fn err(loc: &Loc, msg: impl Into<String>) -> Located {
    Located {
        loc: loc.clone(),
        msg: msg.into(),
        hint: None,
    }
}

impl Located {
    pub fn hint(mut self, h: impl Into<String>) -> Located {
        self.hint = Some(h.into());
        self
    }
}

/// Parses one YAML document (an empty file is Null).
pub fn parse(text: &str, file: &Path) -> Result<Node, Located> {
    let file = Arc::new(file.to_path_buf());
    duplicate_keys(text, &file)?;
    let docs = MarkedYamlOwned::load_from_str(text).map_err(|e| Located {
        loc: Loc {
            file: file.clone(),
            line: e.marker().line(),
            col: e.marker().col() + 1,
        },
        msg: format!("invalid YAML: {}", e.info()),
        hint: Some("check the indentation and quoting around this place".into()),
    })?;
    if docs.len() > 1 {
        let loc = Loc {
            file: file.clone(),
            line: docs[1].span.start.line(),
            col: 1,
        };
        return Err(err(&loc, "this file has more than one YAML document")
            .hint("keep one document per file (remove the `---` separator)"));
    }
    match docs.into_iter().next() {
        None => Ok(Node {
            kind: Kind::Null,
            loc: Loc {
                file,
                line: 1,
                col: 1,
            },
        }),
        Some(d) => convert(d, &file),
    }
}

pub fn parse_file(path: &Path) -> Result<Node, Located> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(&Loc::file_only(path), format!("cannot read this file: {e}")))?;
    if crate::vault::is_vault(&text) {
        let plain = crate::vault::open(&text).map_err(|e| err(&Loc::file_only(path), e))?;
        return parse(&plain, path);
    }
    parse(&text, path)
}

fn convert(n: MarkedYamlOwned, file: &Arc<PathBuf>) -> Result<Node, Located> {
    let loc = Loc {
        file: file.clone(),
        line: n.span.start.line().max(1),
        col: n.span.start.col() + 1,
    };
    let kind = match n.data {
        YamlDataOwned::Value(s) => match s {
            ScalarOwned::Null => Kind::Null,
            ScalarOwned::Boolean(b) => Kind::Bool(b),
            ScalarOwned::Integer(i) => Kind::Int(i),
            ScalarOwned::FloatingPoint(f) => Kind::Float(f.into_inner()),
            ScalarOwned::String(s) => Kind::Str(s),
        },
        YamlDataOwned::Representation(s, _, _) => Kind::Str(s),
        YamlDataOwned::Sequence(items) => {
            let items: Vec<Node> = items
                .into_iter()
                .map(|i| convert(i, file))
                .collect::<Result<_, _>>()?;
            let loc = items
                .first()
                .map(|i| i.loc.clone())
                .filter(|l| l.line >= loc.line)
                .unwrap_or(loc);
            return Ok(Node {
                kind: Kind::Seq(items),
                loc,
            });
        }
        YamlDataOwned::Mapping(map) => {
            let mut out: Vec<(Node, Node)> = Vec::new();
            let mut merged = Vec::new();
            for (k, v) in map {
                let (k, v) = (convert(k, file)?, convert(v, file)?);
                if matches!(&k.kind, Kind::Str(s) if s == "<<") {
                    merged.push(v);
                } else {
                    out.push((k, v));
                }
            }
            // Merge keys (`<<: *base`, `<<: [*a, *b]`), as Ansible reads them: the
            // mapping's own keys win, then the merged mappings in their order.
            for m in merged {
                let maps = match m.kind {
                    Kind::Map(e) => vec![e],
                    Kind::Seq(items) => items
                        .into_iter()
                        .map(|i| match i.kind {
                            Kind::Map(e) => Ok(e),
                            _ => Err(err(&i.loc, "`<<` merges mappings; this is not one")),
                        })
                        .collect::<Result<_, _>>()?,
                    _ => return Err(err(&m.loc, "`<<` merges a mapping or a list of mappings")),
                };
                for (k, v) in maps.into_iter().flatten() {
                    let name = k.scalar_string("key").ok();
                    if !out
                        .iter()
                        .any(|(x, _)| name.is_some() && x.scalar_string("key").ok() == name)
                    {
                        out.push((k, v));
                    }
                }
            }
            // Point a block mapping at its first key (the parser's start mark can be off).
            let loc = out.first().map(|(k, _)| k.loc.clone()).unwrap_or(loc);
            return Ok(Node {
                kind: Kind::Map(out),
                loc,
            });
        }
        YamlDataOwned::Tagged(tag, inner) if tag.suffix == "vault" => {
            let text = match &inner.data {
                YamlDataOwned::Value(ScalarOwned::String(s)) => s.clone(),
                _ => {
                    return Err(err(
                        &loc,
                        "a `!vault` value must be the text ansible-vault wrote",
                    ))
                }
            };
            let plain = crate::vault::open(&text).map_err(|e| err(&loc, e))?;
            Kind::Str(plain.trim_end_matches('\n').to_owned())
        }
        YamlDataOwned::Tagged(_, inner) => return convert(*inner, file),
        // The loader copies an anchored node in place of each alias (bounded beforehand).
        YamlDataOwned::Alias(_) => return Err(err(&loc, "this alias names no anchor")),
        YamlDataOwned::BadValue => return Err(err(&loc, "invalid YAML value")),
    };
    Ok(Node { kind, loc })
}

impl Node {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }

    /// The entries of a mapping (a null node counts as empty), keys as strings.
    pub fn entries(&self, what: &str) -> Result<Vec<(String, &Node, &Node)>, Located> {
        match &self.kind {
            Kind::Null => Ok(Vec::new()),
            Kind::Map(m) => m
                .iter()
                .map(|(k, v)| Ok((k.scalar_string(what)?, k, v)))
                .collect(),
            _ => Err(err(
                &self.loc,
                format!("{what} must be a mapping, found {}", self.type_name()),
            )),
        }
    }

    /// A scalar as a string (keys such as host names may be numbers in YAML).
    pub fn scalar_string(&self, what: &str) -> Result<String, Located> {
        match &self.kind {
            Kind::Str(s) => Ok(s.clone()),
            Kind::Int(i) => Ok(i.to_string()),
            Kind::Float(f) => Ok(f.to_string()),
            Kind::Bool(b) => Ok(b.to_string()),
            _ => Err(err(
                &self.loc,
                format!("{what} must be a string, found {}", self.type_name()),
            )),
        }
    }

    pub fn as_str(&self, what: &str) -> Result<&str, Located> {
        match &self.kind {
            Kind::Str(s) => Ok(s),
            _ => Err(err(
                &self.loc,
                format!("{what} must be a string, found {}", self.type_name()),
            )),
        }
    }

    pub fn as_bool(&self, what: &str) -> Result<bool, Located> {
        match &self.kind {
            Kind::Bool(b) => Ok(*b),
            Kind::Str(s) if matches!(s.as_str(), "yes" | "true" | "True") => Ok(true),
            Kind::Str(s) if matches!(s.as_str(), "no" | "false" | "False") => Ok(false),
            _ => Err(err(
                &self.loc,
                format!("{what} must be true or false, found {}", self.type_name()),
            )),
        }
    }

    /// A list of strings; a single string is a list of one.
    pub fn string_list(&self, what: &str) -> Result<Vec<String>, Located> {
        match &self.kind {
            Kind::Seq(items) => items.iter().map(|i| i.scalar_string(what)).collect(),
            Kind::Str(s) => Ok(s
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect()),
            _ => Err(err(
                &self.loc,
                format!(
                    "{what} must be a list of strings, found {}",
                    self.type_name()
                ),
            )),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.kind {
            Kind::Null => J::Null,
            Kind::Bool(b) => J::Bool(*b),
            Kind::Int(i) => J::from(*i),
            Kind::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Kind::Str(s) => J::String(s.clone()),
            Kind::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(m) => J::Object(
                m.iter()
                    .map(|(k, v)| (k.scalar_string("key").unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Fails on a key outside `known`, suggesting the closest known one.
pub fn check_keys(key: &str, key_node: &Node, known: &[&str], what: &str) -> Result<(), Located> {
    if known.contains(&key) {
        return Ok(());
    }
    let e = err(&key_node.loc, format!("unknown key `{key}` in {what}"));
    Err(match closest(key, known) {
        Some(k) => e.hint(format!("did you mean `{k}`?")),
        None => e.hint(format!("known keys: {}", known.join(", "))),
    })
}

pub fn closest<'a>(word: &str, choices: &[&'a str]) -> Option<&'a str> {
    choices
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Checks the event stream before loading: YAML loaders keep the last of two equal keys
/// silently, and expand aliases without bound. Two equal keys are refused; aliases are
/// allowed (Ansible reads them) while the document they expand to stays within a budget
/// relative to its size, like go-yaml's "excessive aliasing" check: an alias bomb (a few
/// hundred bytes growing to gigabytes) is refused at the alias that crosses it, without
/// being expanded (sizes are added up, nothing is copied).
fn duplicate_keys(text: &str, file: &Arc<PathBuf>) -> Result<(), Located> {
    use saphyr_parser::{Event, Parser};
    use std::collections::HashMap;
    // One frame per open collection: for mappings, the keys seen (with their line)
    // and whether the next node is a key; the node count when it opened, its anchor.
    enum Kind {
        Seq,
        Map(HashMap<String, usize>, bool),
    }
    struct Frame {
        kind: Kind,
        start: u64,
        anchor: usize,
    }
    let mut stack: Vec<Frame> = Vec::new();
    // A finished node: flips the parent mapping between key and value.
    fn done(stack: &mut [Frame]) {
        if let Some(Frame {
            kind: Kind::Map(_, is_key),
            ..
        }) = stack.last_mut()
        {
            *is_key = !*is_key;
        }
    }
    let budget = alias_budget(text.len());
    // Nodes of the document as loaded (aliases expanded), and each anchor's size.
    let mut nodes: u64 = 0;
    let mut sizes: HashMap<usize, u64> = HashMap::new();
    for ev in Parser::new_from_str(text) {
        let Ok((ev, span)) = ev else {
            return Ok(()); // the loader reports syntax errors
        };
        let loc = || Loc {
            file: file.clone(),
            line: span.start.line().max(1),
            col: span.start.col() + 1,
        };
        match ev {
            Event::Scalar(v, _, anchor, _) => {
                nodes += 1;
                if anchor > 0 {
                    sizes.insert(anchor, 1);
                }
                if let Some(Frame {
                    kind: Kind::Map(keys, true),
                    ..
                }) = stack.last_mut()
                {
                    let line = span.start.line();
                    if let Some(first) = keys.insert(v.to_string(), line) {
                        return Err(err(
                            &loc(),
                            format!(
                                "key `{v}` appears twice in this mapping (first on line {first})"
                            ),
                        )
                        .hint("remove one of them: YAML keeps only the last"));
                    }
                }
                done(&mut stack);
            }
            Event::Alias(id) => {
                nodes = nodes.saturating_add(sizes.get(&id).copied().unwrap_or(1));
                if nodes > budget {
                    return Err(err(
                        &loc(),
                        format!(
                            "YAML aliases expand this document past {budget} nodes (an alias bomb?)"
                        ),
                    )
                    .hint("repeat fewer values through aliases"));
                }
                done(&mut stack);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                let kind = if matches!(ev, Event::SequenceStart(..)) {
                    Kind::Seq
                } else {
                    Kind::Map(HashMap::new(), true)
                };
                stack.push(Frame {
                    kind,
                    start: nodes,
                    anchor,
                });
                nodes += 1;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(f) = stack.pop() {
                    if f.anchor > 0 {
                        sizes.insert(f.anchor, nodes - f.start);
                    }
                }
                done(&mut stack);
            }
            Event::DocumentStart(_) => stack.clear(),
            _ => {}
        }
    }
    Ok(())
}

/// The nodes a document of `len` bytes may expand to through its aliases.
fn alias_budget(len: usize) -> u64 {
    10_000 + 10 * len as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Result<serde_json::Value, Located> {
        parse(text, Path::new("t.yml")).map(|n| n.to_json())
    }

    #[test]
    fn anchors_aliases_and_merge_keys_read_as_ansible_reads_them() {
        let v = json(
            "node_labels: &db {tier: db, disk: ssd}\n\
             extra_labels: {<<: *db, backup: \"yes\", disk: nvme}\n\
             both: {<<: [{a: 1, b: 1}, {b: 2, c: 2}], c: 3}\n\
             list: &l [1, 2]\nagain: *l\n",
        )
        .unwrap();
        assert_eq!(
            v["extra_labels"],
            serde_json::json!({"backup": "yes", "disk": "nvme", "tier": "db"})
        );
        assert_eq!(
            v["node_labels"],
            serde_json::json!({"tier": "db", "disk": "ssd"})
        );
        assert_eq!(v["both"], serde_json::json!({"a": 1, "b": 1, "c": 3}));
        assert_eq!(v["again"], serde_json::json!([1, 2]));
        let e = json("a: {<<: [1, 2]}\n").unwrap_err();
        assert!(
            e.to_string().contains("t.yml:1:") && e.msg.contains("merges mappings"),
            "{e}"
        );
    }

    #[test]
    fn an_alias_bomb_is_refused_at_its_place_without_being_expanded() {
        let mut bomb = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10u8 {
            let (p, c) = ((b'a' + i - 1) as char, (b'a' + i) as char);
            bomb += &format!("{c}: &{c} [{}]\n", vec![format!("*{p}"); 10].join(", "));
        }
        let t = std::time::Instant::now();
        let e = json(&bomb).unwrap_err();
        assert!(
            t.elapsed() < std::time::Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        assert!(e.msg.contains("expand this document past"), "{e}");
        assert_eq!(e.loc.line, 5, "{e}");
        // Legitimate reuse stays well within the budget.
        let ok = "base: &b {x: 1, y: 2}\n".to_string()
            + &(0..200)
                .map(|i| format!("h{i}: {{<<: *b, z: {i}}}\n"))
                .collect::<String>();
        assert_eq!(
            json(&ok).unwrap()["h7"],
            serde_json::json!({"x": 1, "y": 2, "z": 7})
        );
    }
}
