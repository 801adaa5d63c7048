//! `provision inventory`: the resolved hosts, groups and variables, to debug precedence
//! and compare with `ansible-inventory` on the same file. Secret values are masked.

use super::{exit, lab_or};
use crate::inventory::Inventory;
use serde_json::{json, Map, Value};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct InventoryArgs {
    /// The inventory (the local lab's when omitted)
    pub inventory: Option<PathBuf>,
    /// Every group and host with its variables, in ansible-inventory's JSON shape (the default)
    #[arg(long, conflicts_with_all = ["graph", "host"])]
    pub list: bool,
    /// The group tree
    #[arg(long, conflicts_with = "host")]
    pub graph: bool,
    /// One host's variables
    #[arg(long)]
    pub host: Option<String>,
}

fn masked(vars: &Map<String, Value>) -> Value {
    let mut hidden = Vec::new();
    crate::output::secret_values(&Value::Object(vars.clone()), false, &mut hidden);
    let mut v = Value::Object(vars.clone());
    fn walk(v: &mut Value, hidden: &[String]) {
        match v {
            Value::String(s) if hidden.contains(s) => *s = "********".into(),
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, hidden)),
            Value::Object(o) => o.values_mut().for_each(|x| walk(x, hidden)),
            _ => {}
        }
    }
    walk(&mut v, &hidden);
    v
}

/// The JSON of `ansible-inventory --list`.
pub fn list(inv: &Inventory) -> Value {
    let mut out = Map::new();
    let hostvars: Map<String, Value> = inv
        .hosts
        .iter()
        .map(|(h, host)| (h.clone(), masked(&host.vars)))
        .collect();
    out.insert("_meta".into(), json!({ "hostvars": hostvars }));
    for (g, (own, children)) in &inv.tree {
        let mut e = Map::new();
        let mut children = children.clone();
        if g == "all" {
            children.push("ungrouped".into());
        }
        if !children.is_empty() {
            e.insert("children".into(), json!(children));
        }
        if !own.is_empty() && g != "all" {
            e.insert("hosts".into(), json!(own));
        }
        out.insert(g.clone(), Value::Object(e));
    }
    let ungrouped: Vec<&String> = inv
        .groups
        .get("ungrouped")
        .map(|s| s.iter().collect())
        .unwrap_or_default();
    out.insert(
        "ungrouped".into(),
        if ungrouped.is_empty() {
            json!({})
        } else {
            json!({ "hosts": ungrouped })
        },
    );
    Value::Object(out)
}

/// The tree of `ansible-inventory --graph`.
pub fn graph(inv: &Inventory) -> String {
    fn group(inv: &Inventory, g: &str, depth: usize, out: &mut String) {
        let pad = "  |".repeat(depth);
        out.push_str(&format!(
            "{}{}@{g}:\n",
            pad,
            if depth > 0 { "--" } else { "" }
        ));
        let (own, children) = match g {
            "ungrouped" => (
                inv.groups
                    .get("ungrouped")
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default(),
                Vec::new(),
            ),
            _ => inv.tree.get(g).cloned().unwrap_or_default(),
        };
        let mut children = children;
        if g == "all" {
            children.push("ungrouped".into());
        }
        for c in &children {
            group(inv, c, depth + 1, out);
        }
        if g != "all" {
            for h in own {
                out.push_str(&format!("{}  |--{h}\n", pad));
            }
        }
    }
    let mut out = String::new();
    group(inv, "all", 0, &mut out);
    out
}

pub fn main(a: InventoryArgs) -> anyhow::Result<i32> {
    let path = lab_or(a.inventory)?;
    let inv = match Inventory::load(&path) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::INVALID);
        }
    };
    if a.graph {
        use std::io::Write as _;
        let _ = std::io::stdout().write_all(graph(&inv).as_bytes());
    } else if let Some(h) = a.host {
        let Some(host) = inv.hosts.get(&h) else {
            eprintln!("error: no host `{h}` in {}", path.display());
            return Ok(exit::INVALID);
        };
        out!(
            "{}",
            serde_json::to_string_pretty(&masked(&host.vars)).unwrap_or_default()
        );
    } else {
        out!(
            "{}",
            serde_json::to_string_pretty(&list(&inv)).unwrap_or_default()
        );
    }
    Ok(exit::OK)
}
