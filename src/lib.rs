//! phananh: citizens' field reports from every channel, stored once, forwarded reliably.
//! docs/ARCHITECTURE.md maps this crate.

pub mod ack;
pub mod backoff;
pub mod channels;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod evaluate;
pub mod fetch;
pub mod forward;
pub mod health;
pub mod http;
pub mod intake;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod status;
pub mod store;
pub mod tracking;
