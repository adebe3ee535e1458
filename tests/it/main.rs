//! The one integration-test binary (links once: these machines have 2 cores).
//! Black-box where a user would be: the real `phananh` binary, real files, real signals.

mod ack;
mod backpressure;
mod classify;
mod cli;
mod common;
mod crash;
mod daemon;
mod dedupe;
mod diskfull;
mod facebook;
mod feed;
mod followup;
mod forward_amqp;
mod forward_http;
mod golden;
mod hostile;
mod http_stub;
mod imap;
mod metrics;
mod outbox;
mod purge;
mod rabbit;
mod schema;
mod smtp_sink;
mod systemd;
