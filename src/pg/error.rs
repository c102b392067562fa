//! What can go wrong talking to PostgreSQL, typed, with the path or URL it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The CA file given for TLS cannot be used.
    #[error("CA file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    TlsSetup(String),
    /// The URL does not parse (`url` is shown without its password).
    #[error("URL {url}: {reason}")]
    Url { url: String, reason: String },
    /// Connecting, or the server's answer to a query (the text says which).
    #[error("{0}")]
    Server(String),
    #[error("{}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("cannot start the PostgreSQL runtime: {0}")]
    Runtime(String),
}

impl From<PgError> for crate::Error {
    /// Settings that cannot work are invalid input (exit 2); a server that does not
    /// answer as it should is a failure of the action (exit 1).
    fn from(e: PgError) -> crate::Error {
        let message = e.to_string();
        match e {
            PgError::CaFile { .. } | PgError::TlsSetup(_) => crate::Error::Invalid {
                what: "postgres TLS",
                message,
            },
            PgError::Url { .. } => crate::Error::Invalid {
                what: "postgres settings",
                message,
            },
            PgError::Key { .. } => crate::Error::Invalid {
                what: "notify key",
                message,
            },
            PgError::Server(_) | PgError::Runtime(_) => crate::Error::Postgres { message },
        }
    }
}
