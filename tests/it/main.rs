//! All integration tests, one binary. `fuse_*` modules run against the embedded server, or an
//! external endpoint when `S3MOUNT_TEST_ENDPOINT` is set; `cli` checks every bad input's message.

mod cli;
mod common;
mod fuse_fault_suite;
mod fuse_faults;
mod fuse_gateways;
mod fuse_options;
mod fuse_posix;
mod fuse_read;
mod fuse_reftest;
mod fuse_semantics;
mod fuse_write;
mod servers;
