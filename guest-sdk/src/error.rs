//! The error an operator returns on purpose.

use std::fmt;

/// A failure an operator reports on purpose: the `err` of `invoke`.
///
/// The host turns it into an `operator` error carrying the same code, message
/// and retryable flag. Retry policies retry only retryable errors.
///
/// ```
/// use xcs_guest::Error;
///
/// let error = Error::invalid_input("the list is empty");
/// assert_eq!(error.code(), "invalid-input");
/// assert!(!error.is_retryable());
///
/// let error = Error::new("rate-limited", "try again later").retryable(true);
/// assert!(error.is_retryable());
/// assert_eq!(error.to_string(), "rate-limited: try again later");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Error {
    code: String,
    message: String,
    retryable: bool,
}

impl Error {
    /// Code of [`Error::invalid_input`].
    pub const INVALID_INPUT: &'static str = "invalid-input";
    /// Code of [`Error::transient`].
    pub const TRANSIENT: &'static str = "transient";
    /// Code of [`Error::internal`].
    pub const INTERNAL: &'static str = "internal";

    /// An error with a short kebab-case `code` and a human-readable
    /// `message`; not retryable.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// The input is wrong for this operator (code `invalid-input`); calling
    /// again with the same input fails again, so not retryable.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(Self::INVALID_INPUT, message)
    }

    /// A failure that may go away by itself (code `transient`); retryable.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(Self::TRANSIENT, message).retryable(true)
    }

    /// A bug or broken invariant in the operator (code `internal`); not
    /// retryable.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Self::INTERNAL, message)
    }

    /// Sets whether calling again with the same input may succeed.
    #[must_use]
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The short machine-readable code, e.g. `invalid-input`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The human-readable explanation.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether calling again with the same input may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The fields, for the glue that `#[operator]` generates.
    pub(crate) fn into_parts(self) -> (String, String, bool) {
        (self.code, self.message, self.retryable)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}
