//! What is built into the binary: the roles/ and templates/ folders.

use include_dir::{include_dir, Dir};

pub static ROLES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/roles");
pub static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// A file of the built-in templates/ folder (the built-in stacks' compose templates).
pub fn builtin_file(rel: &str) -> Option<String> {
    TEMPLATES
        .get_file(rel)
        .and_then(|f| f.contents_utf8())
        .map(str::to_owned)
}
