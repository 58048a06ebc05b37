//! The `sluice` server: the framework plus the built-in filters, chosen by a KDL file.
//!
//! [`build`] turns a validated configuration into the engine's pieces, [`Server`] binds
//! and serves them and drains on shutdown, [`cli`] is the command line, [`admin`] and
//! [`metrics`] are the admin API and its Prometheus metrics, [`upgrade`] hands the
//! listening sockets to a new binary. `main.rs` only
//! parses arguments and calls [`cli::run`].

pub mod admin;
pub mod build;
pub mod cli;
pub mod configured;
pub mod metrics;
pub mod otlp;
pub mod policy;
pub mod privileges;
pub mod server;
pub mod upgrade;

pub use server::Server;
