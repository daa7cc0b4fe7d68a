//! The filesystem's error type and the one errno table.
//!
//! Every failure the core can report is a variant here; [`Error::errno`] is the only place that
//! decides which errno the kernel sees. Store errors keep their text for the log line.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("read-only file system")]
    ReadOnly,
    #[error("bad file handle")]
    BadHandle,
    #[error("name is not valid here")]
    InvalidName,
    #[error("the object changed on the server while open; reopen the file")]
    Changed,
    #[error("operation not supported")]
    NotSupported,
    #[error("file exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid argument")]
    InvalidArgument,
    #[error("file too large for a single PutObject (5 GiB)")]
    TooBig,
    #[error("too large to move on the server; copy instead")]
    CrossDevice,
    #[error("the file name is longer than 255 bytes")]
    NameTooLong,
    #[error("hard links cannot be stored on S3 (use a copy or a symlink)")]
    NotPermitted,
    #[error("no such extended attribute")]
    NoAttribute,
    #[error("the object's user metadata would pass S3's 2 KiB limit")]
    MetadataFull,
    #[error("the buffer is too small for the value")]
    Range,
    /// Local disk I/O (staging, the cache directory): its errno reaches the caller as itself,
    /// so a full disk is ENOSPC, not EIO.
    #[error("local disk: {0}")]
    Io(#[from] std::io::Error),
    #[error("store: {0}")]
    Store(StoreError),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Error::NotFound,
            StoreError::PreconditionFailed => Error::Changed,
            other => Error::Store(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The errno for the kernel. The one table.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::NotDir => libc::ENOTDIR,
            Error::IsDir => libc::EISDIR,
            Error::ReadOnly => libc::EROFS,
            Error::BadHandle => libc::EBADF,
            Error::InvalidName => libc::ENOENT,
            Error::Changed => libc::EIO,
            Error::NotSupported => libc::ENOTSUP,
            Error::Exists => libc::EEXIST,
            Error::NotEmpty => libc::ENOTEMPTY,
            Error::InvalidArgument => libc::EINVAL,
            Error::TooBig => libc::EFBIG,
            Error::CrossDevice => libc::EXDEV,
            Error::NameTooLong => libc::ENAMETOOLONG,
            Error::NotPermitted => libc::EPERM,
            Error::NoAttribute => libc::ENODATA,
            Error::MetadataFull => libc::E2BIG,
            Error::Range => libc::ERANGE,
            Error::Io(e) => match e.raw_os_error() {
                Some(
                    n @ (libc::ENOSPC
                    | libc::EDQUOT
                    | libc::EROFS
                    | libc::EFBIG
                    | libc::EMFILE
                    | libc::ENFILE),
                ) => n,
                _ => libc::EIO,
            },
            Error::Store(e) => match e {
                StoreError::AccessDenied { .. } => libc::EACCES,
                StoreError::NotImplemented(_) => libc::ENOTSUP,
                StoreError::Unreachable { .. } => libc::EIO,
                _ => libc::EIO,
            },
        }
    }

    /// Expected outcomes (a missing file) are not worth a warning in the log.
    pub fn is_expected(&self) -> bool {
        matches!(
            self,
            Error::NotFound
                | Error::InvalidName
                | Error::ReadOnly
                | Error::Exists
                | Error::NotEmpty
                | Error::NoAttribute
                | Error::Range
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table() {
        assert_eq!(Error::from(StoreError::NotFound).errno(), libc::ENOENT);
        assert_eq!(
            Error::from(StoreError::PreconditionFailed).errno(),
            libc::EIO
        );
        let denied = StoreError::AccessDenied {
            status: 403,
            code: None,
            message: None,
        };
        assert_eq!(Error::from(denied).errno(), libc::EACCES);
        assert_eq!(Error::ReadOnly.errno(), libc::EROFS);
    }
}
