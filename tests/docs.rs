//! The docs keep up with the roles: every variable a role declares in its defaults or reads
//! in its tasks, handlers and templates (by its own prefix) is listed on its docs/roles page.
//! No lab needed.

use std::path::Path;

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn every_role_variable_is_on_its_docs_page() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    let mut roles = 0;
    let key = regex::Regex::new(r"(?m)^([a-z_][a-z0-9_]*):").unwrap();
    for e in std::fs::read_dir(root.join("roles")).unwrap().flatten() {
        let role = e.file_name().to_string_lossy().into_owned();
        roles += 1;
        let page = root.join(format!("docs/roles/{role}.md"));
        let Ok(doc) = std::fs::read_to_string(&page) else {
            missing.push(format!("{role}: no page {}", page.display()));
            continue;
        };
        let mut names = Vec::new();
        let defaults =
            std::fs::read_to_string(e.path().join("defaults/main.yml")).unwrap_or_default();
        names.extend(key.captures_iter(&defaults).map(|c| c[1].to_owned()));
        #[allow(clippy::regex_creation_in_loops)] // one per role
        let read = regex::Regex::new(&format!(r"\b{role}_[a-z0-9_]*[a-z0-9]\b")).unwrap();
        let mut fs = Vec::new();
        for sub in ["tasks", "handlers", "templates"] {
            files(&e.path().join(sub), &mut fs);
        }
        files(&root.join("templates").join(&role), &mut fs);
        for f in fs {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
                names.extend(read.find_iter(line).map(|m| m.as_str().to_owned()));
            }
        }
        names.sort();
        names.dedup();
        for n in names {
            if !doc.contains(&format!("`{n}`")) {
                missing.push(format!("{role}: `{n}` is not on {}", page.display()));
            }
        }
    }
    assert!(roles >= 9, "the roles folder was not found");
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
