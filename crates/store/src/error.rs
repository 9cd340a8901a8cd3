use std::fmt;

/// Result of a storage operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a storage operation failed. User-caused variants (`NotFound`,
/// `AlreadyExists`, `Conflict`, `QuotaExceeded`, `Invalid`) map to protocol
/// "no" answers; the others are server faults to log.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The named object does not exist.
    NotFound {
        /// Kind of object.
        what: &'static str,
        /// Its name or id.
        name: String,
    },
    /// An object with that name exists already.
    AlreadyExists {
        /// Kind of object.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The change contradicts existing data.
    Conflict(String),
    /// The object is not in the state the write was conditional on
    /// (an ETag that no longer matches, a name that is taken).
    PreconditionFailed(String),
    /// The account's quota would be exceeded.
    QuotaExceeded {
        /// Quota in bytes.
        limit: u64,
        /// Bytes the account would use.
        needed: u64,
    },
    /// The request itself is malformed.
    Invalid(String),
    /// Stored data is damaged (a blob missing or not matching its hash).
    Corrupt(String),
    /// A blob file vanished between being written and being referenced;
    /// the caller writes it again and retries.
    BlobMissing(bulwark_core::BlobId),
    /// The storage engine or file system failed.
    Storage(String),
    /// The store is shutting down or its writer is gone.
    Unavailable(String),
}

impl Error {
    /// Whether the caller caused the error (as opposed to a server fault).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::NotFound { .. }
                | Error::AlreadyExists { .. }
                | Error::Conflict(_)
                | Error::PreconditionFailed(_)
                | Error::QuotaExceeded { .. }
                | Error::Invalid(_)
        )
    }

    pub(crate) fn not_found(what: &'static str, name: impl fmt::Display) -> Error {
        Error::NotFound {
            what,
            name: name.to_string(),
        }
    }

    pub(crate) fn exists(what: &'static str, name: impl fmt::Display) -> Error {
        Error::AlreadyExists {
            what,
            name: name.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound { what, name } => write!(f, "{what} {name} does not exist"),
            Error::AlreadyExists { what, name } => write!(f, "{what} {name} already exists"),
            Error::Conflict(m) => write!(f, "{m}"),
            Error::PreconditionFailed(m) => write!(f, "precondition failed: {m}"),
            Error::QuotaExceeded { limit, needed } => {
                write!(f, "quota exceeded: {needed} bytes needed, {limit} allowed")
            }
            Error::Invalid(m) => write!(f, "invalid request: {m}"),
            Error::Corrupt(m) => write!(f, "stored data is damaged: {m}"),
            Error::BlobMissing(id) => write!(f, "blob {id} is missing"),
            Error::Storage(m) => write!(f, "storage failure: {m}"),
            Error::Unavailable(m) => write!(f, "storage unavailable: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(e.to_string())
    }
}
