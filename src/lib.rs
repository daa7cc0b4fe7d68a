//! s3mount: mount an S3-compatible bucket as a local directory.
//!
//! # Layout
//! - [`cli`]: command-line arguments exactly as typed.
//! - [`config`]: CLI + env + TOML + AWS shared files -> one resolved [`config::MountConfig`].
//! - [`store`]: the [`store::ObjectStore`] trait; aws-sdk-s3 and in-memory implementations.
//! - [`fs`]: the filesystem core (inodes, lookup, readdir, prefetching reads); no fuser types.
//! - [`cache`]: moka page cache and negative-lookup cache.
//! - [`fuse`]: the thin fuser adapter.
//! - [`server`]: `s3mount serve`, the embedded S3-compatible server.
//! - [`check`]: `s3mount check`, what the server supports.
//! - [`recover`]: `s3mount recover`, uploading what mounts could not.
//! - [`run`]: wiring: check the bucket, daemonize, mount, signals.
//! - [`metrics`]: `--metrics-addr`, Prometheus text of the mount's counters and gauges.
//! - [`s3rules`]: S3's listing order and multipart ETag, shared by the server and the test store.

pub mod cache;
pub mod check;
pub mod cli;
pub mod config;
pub mod fs;
pub mod fuse;
pub mod metrics;
pub mod recover;
pub mod run;
pub mod s3rules;
pub mod server;
pub mod store;
