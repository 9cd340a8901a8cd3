//! SMTP front end (work in progress).
