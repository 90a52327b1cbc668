//! The error every plain configuration constructor returns: which field, what
//! value, why not. Only the command line knows which flag sets a field, and says
//! so when it reports one of these.

/// A configuration field whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value:?}: {reason}")]
pub struct FieldError {
    /// The field of the configuration struct, e.g. `mx_host`.
    pub field: &'static str,
    /// The value as given.
    pub value: String,
    /// Why it cannot be used, and what would do.
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field,
            value: value.into(),
            reason: reason.into(),
        }
    }
}
