//! The write path's building blocks. `staging` holds a file's bytes while it is written.
//! (Wiring into the filesystem comes with the read-write mount.)

pub mod staging;
