//! Typed access to the arguments of a module or a cluster step (rendered task arguments).

use serde_json::{Map, Value};

/// Typed access to a module's arguments.
pub struct Args<'a>(pub &'a Map<String, Value>);

impl Args<'_> {
    pub fn str(&self, k: &str) -> Result<Option<String>, String> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(v) => Err(format!("`{k}` must be a string, found {v}")),
        }
    }
    pub fn req(&self, k: &str) -> Result<String, String> {
        self.str(k)?.ok_or_else(|| format!("`{k}` is required"))
    }
    pub fn bool(&self, k: &str, default: bool) -> Result<bool, String> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if ["yes", "true", "True"].contains(&s.as_str()) => Ok(true),
            Some(Value::String(s)) if ["no", "false", "False"].contains(&s.as_str()) => Ok(false),
            Some(v) => Err(format!("`{k}` must be true or false, found {v}")),
        }
    }
    pub fn list(&self, k: &str) -> Result<Vec<String>, String> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(format!("`{k}` must be a list of strings, found {other}")),
                })
                .collect(),
            Some(Value::String(s)) => Ok(s
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect()),
            Some(v) => Err(format!("`{k}` must be a list, found {v}")),
        }
    }
    pub fn choice(&self, k: &str, default: &str, allowed: &[&str]) -> Result<String, String> {
        let v = self.str(k)?.unwrap_or_else(|| default.to_owned());
        if allowed.contains(&v.as_str()) {
            Ok(v)
        } else {
            Err(format!(
                "`{k}` must be one of {}, found `{v}`",
                allowed.join(", ")
            ))
        }
    }
    /// A file mode as octal digits ("0644", "644" or the YAML integer 644).
    pub fn mode(&self, k: &str) -> Result<Option<String>, String> {
        let Some(m) = self.str(k)? else {
            return Ok(None);
        };
        let digits = m.trim_start_matches('0');
        let digits = if digits.is_empty() { "0" } else { digits };
        if digits.len() > 4 || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
            return Err(format!(
                "`{k}` must be an octal mode like \"0644\", found `{m}`"
            ));
        }
        Ok(Some(format!(
            "{:o}",
            u32::from_str_radix(digits, 8).unwrap_or(0)
        )))
    }
}
