//! One checked rule of the audit: what was expected, what was found, and whether it holds.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: String,
    pub title: String,
    pub reason: String,
    pub pass: bool,
    pub expected: String,
    pub actual: String,
}
