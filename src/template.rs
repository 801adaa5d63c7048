//! Templates and expressions (minijinja) with the Ansible filters users reach for.

use base64::Engine;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};

/// As Ansible's `to_nice_json`: keys sorted, four-space indent, so files written
/// by an Ansible role and by provision are byte for byte the same.
fn nice_json(v: Value) -> Result<String, Error> {
    use serde::Serialize;
    let err = |e: serde_json::Error| Error::new(ErrorKind::InvalidOperation, e.to_string());
    // serde_json's Map is a BTreeMap here (no preserve_order): keys come out sorted.
    let sorted = serde_json::to_value(&v).map_err(err)?;
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    sorted.serialize(&mut ser).map_err(err)?;
    String::from_utf8(out).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_filter("to_json", |v: Value| -> Result<String, Error> {
        serde_json::to_string(&v)
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
    });
    env.add_filter("to_nice_json", nice_json);
    env.add_filter("b64encode", |s: String| {
        base64::engine::general_purpose::STANDARD.encode(s)
    });
    env.add_filter("b64decode", |s: String| -> Result<String, Error> {
        let b = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    });
    env.add_filter(
        "regex_replace",
        |s: String, pat: String, rep: Option<String>| -> Result<String, Error> {
            let re = regex::Regex::new(&pat)
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            Ok(re
                .replace_all(
                    &s,
                    rep.unwrap_or_default()
                        .replace("\\1", "$1")
                        .replace("\\2", "$2")
                        .as_str(),
                )
                .into_owned())
        },
    );
    env.add_filter("quote", |s: String| crate::transport::quote(&s));
    env.add_filter("bool", |v: Value| -> bool {
        match v.as_str() {
            Some(s) => matches!(s.to_ascii_lowercase().as_str(), "yes" | "true" | "1" | "on"),
            None => v.is_true(),
        }
    });
    env.add_filter("mandatory", |v: Value| -> Result<Value, Error> {
        if v.is_undefined() {
            Err(Error::new(
                ErrorKind::UndefinedError,
                "a mandatory variable is not defined",
            ))
        } else {
            Ok(v)
        }
    });
    env
}

/// Renders every string inside `v`; a string that is one `{{ expr }}` keeps the expression's type.
pub fn render_value(
    env: &Environment,
    v: &serde_json::Value,
    ctx: &Value,
) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        J::String(s) => {
            if !s.contains("{{") && !s.contains("{%") {
                return Ok(v.clone());
            }
            // Only spaces around it: "{{ x }}\n" is a string that ends with a newline.
            let t = s.trim_matches(' ');
            if t.starts_with("{{") && t.ends_with("}}") && t[2..].find("}}") == Some(t.len() - 4) {
                let expr = env
                    .compile_expression(&t[2..t.len() - 2])
                    .map_err(|e| describe(&e))?;
                let out = expr.eval(ctx).map_err(|e| describe(&e))?;
                if out.is_undefined() {
                    return Err(format!("`{}` is undefined", t[2..t.len() - 2].trim()));
                }
                return serde_json::to_value(&out).map_err(|e| e.to_string());
            }
            J::String(env.render_str(s, ctx).map_err(|e| describe(&e))?)
        }
        J::Array(items) => J::Array(
            items
                .iter()
                .map(|i| render_value(env, i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(m) => J::Object(
            m.iter()
                .map(|(k, i)| Ok((k.clone(), render_value(env, i, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

pub fn eval_bool(env: &Environment, expr: &str, ctx: &Value) -> Result<bool, String> {
    let e = expr.trim().trim_start_matches("{{").trim_end_matches("}}");
    let compiled = env.compile_expression(e).map_err(|e| describe(&e))?;
    Ok(compiled.eval(ctx).map_err(|e| describe(&e))?.is_true())
}

/// An error as one line: for an undefined variable, which one, and where.
pub fn describe(e: &Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(d) = e.detail() {
        s += &format!(": {d}");
    }
    if e.kind() == ErrorKind::UndefinedError {
        if let (Some(src), Some(r)) = (e.template_source(), e.range()) {
            if let Some(what) = src.get(r).map(str::trim).filter(|w| !w.is_empty()) {
                s = format!("`{what}` is undefined");
            }
        }
    }
    match (e.name(), e.line()) {
        (Some(n), Some(l)) if !n.starts_with('<') => s += &format!(" ({n}, line {l})"),
        _ => {}
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_expression_keeps_its_type_but_not_a_newline_after_it() {
        let env = super::environment();
        let ctx = minijinja::context! { xs => vec![1, 2], s => "a" };
        let list = super::render_value(&env, &serde_json::json!(" {{ xs }} "), &ctx).unwrap();
        assert_eq!(list, serde_json::json!([1, 2]));
        let line = super::render_value(&env, &serde_json::json!("{{ s }}\n"), &ctx).unwrap();
        assert_eq!(line, serde_json::json!("a\n"));
    }

    #[test]
    fn quote_is_a_posix_shell_word() {
        let env = super::environment();
        let ctx = minijinja::context! { c => "*-*-* 03:30", d => "daily", q => "it's" };
        let r = |t: &str| super::render_value(&env, &serde_json::json!(t), &ctx).unwrap();
        assert_eq!(r("x {{ c | quote }}"), serde_json::json!("x '*-*-* 03:30'"));
        assert_eq!(r("x {{ d | quote }}"), serde_json::json!("x daily"));
        assert_eq!(r("x {{ q | quote }}"), serde_json::json!("x 'it'\\''s'"));
        assert_eq!(r("keep={{ 7 | int }}"), serde_json::json!("keep=7"));
    }

    #[test]
    fn an_undefined_variable_is_named_with_its_place() {
        let mut env = super::environment();
        env.add_template("t.j2", "a\nb {{ nope.x }}\n").unwrap();
        let e = env
            .get_template("t.j2")
            .unwrap()
            .render(minijinja::context! {})
            .unwrap_err();
        assert_eq!(super::describe(&e), "`nope.x` is undefined (t.j2, line 2)");
        let ctx = minijinja::context! {};
        let e =
            super::render_value(&env, &serde_json::json!("x {{ missing }} y"), &ctx).unwrap_err();
        assert!(e.contains("`missing` is undefined"), "{e}");
    }

    #[test]
    fn nice_json_is_ansibles() {
        let env = super::environment();
        let out = env
            .render_str(
                "{{ {'b': 1, 'a': {'y': true, 'x': [1]}} | to_nice_json }}",
                (),
            )
            .unwrap();
        // json.dumps(v, indent=4, sort_keys=True, separators=(',', ': ')) in Python
        let want = "{\n    \"a\": {\n        \"x\": [\n            1\n        ],\n        \"y\": true\n    },\n    \"b\": 1\n}";
        assert_eq!(out, want);
    }
}
