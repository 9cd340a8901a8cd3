//! IMAP front end (work in progress).
