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

/// What `provision audit` found on one host: its findings, or why it could not look.
pub type AuditResult = Result<Vec<Finding>, AuditError>;

/// Why a host's audit has no findings; a host that did not answer is told apart by its
/// kind, never by its message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AuditError {
    pub unreachable: bool,
    pub message: String,
}
