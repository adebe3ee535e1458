//! The command line: `phananh <verb> [--config PATH]`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "phananh",
    version,
    about = "Takes citizens' field reports from every channel, stores each once, forwards it to the operations queue.",
    after_help = "Examples:\n  phananh check --config /etc/phananh/phananh.toml\n  phananh run\n  phananh ingest --channel mail fixtures/email/*.eml\n  phananh reports show PA-7K3M-Q2XD"
)]
pub struct Cli {
    /// The daemon config file. Channels are read from its channels_dir.
    #[arg(long, global = true, env = "PHANANH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: channels, store, forwarders, HTTP server.
    #[command(after_help = "Example:\n  phananh run --config /etc/phananh/phananh.toml")]
    Run,
    /// The picture at a glance: each channel's and sink's state (from the running daemon) and
    /// what the database holds. Exit 1 when the daemon does not answer ready.
    #[command(after_help = "Examples:\n  phananh status\n  phananh status --json")]
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Retention: anonymise everything received more than DURATION ago. Reports stay (incident,
    /// place, photos) without their reporter; raw items are emptied; reporters with no newer
    /// report are deleted. It cannot be undone; back the database up first.
    #[command(after_help = "Example:\n  phananh purge --older-than 365d")]
    Purge {
        /// e.g. "365d", "18months"
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
    },
    /// A citizen's request to delete their data: anonymise their reports whatever their age,
    /// empty every raw item from or naming them, delete their Messenger messages and their
    /// reporter record. Any one identifier matches. It cannot be undone; back the database up
    /// first. The output gives counts only.
    #[command(
        after_help = "Examples:\n  phananh erase --email an.nguyen@example.com\n  phananh erase --phone '0905 123 456' --psid 6123456789012345"
    )]
    Erase(EraseArgs),
    /// Validate everything the daemon would load; one ✓/✗ line per file. Exit 1 on any error.
    #[command(after_help = "Example:\n  phananh check --config config/quickstart.toml")]
    Check,
    /// Run files through the same pipeline as a channel, print what became of each, then forward.
    #[command(
        after_help = "Example:\n  phananh ingest --config config/quickstart.toml --channel mail fixtures/email/*.eml"
    )]
    Ingest(IngestArgs),
    /// Read stored reports.
    #[command(subcommand)]
    Reports(ReportsCommand),
    /// Items that could not be parsed: list, show, and re-run after a fix.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Events waiting for, or given up by, a sink.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Acknowledgements to citizens: what was sent, what was not and why, and re-sending.
    #[command(subcommand)]
    Acks(AcksCommand),
    /// Run the labelled pairs of an evaluation set through the dedupe (the configured categories,
    /// geography and [dedupe] policy) and print precision and recall for each level.
    #[command(
        name = "dedupe-eval",
        after_help = "Example:\n  phananh dedupe-eval --config config/quickstart.toml fixtures/dedupe --verbose"
    )]
    DedupeEval(DedupeEvalArgs),
}

#[derive(Debug, Args)]
pub struct DedupeEvalArgs {
    /// The folder holding pairs.jsonl (and the photos it names).
    #[arg(default_value = "fixtures/dedupe")]
    pub dir: PathBuf,
    /// List every pair judged otherwise than labelled.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The channel (file stem under channels/) whose parser and name the files get.
    #[arg(long)]
    pub channel: String,
    /// Store only; leave forwarding to the daemon.
    #[arg(long)]
    pub no_forward: bool,
    /// Files to ingest (raw RFC 5322 messages for mail channels).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ReportsCommand {
    /// Newest reports first.
    #[command(after_help = "Example:\n  phananh reports list --limit 20")]
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One report by tracking code (case and dashes do not matter).
    #[command(after_help = "Example:\n  phananh reports show pa-7k3m-q2xd")]
    Show {
        code: String,
        #[arg(long)]
        json: bool,
    },
    /// Every report as the forwarded event, one JSON object per line.
    #[command(after_help = "Example:\n  phananh reports export --format jsonl > reports.jsonl")]
    Export {
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl"])]
        format: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Quarantined items with their reasons.
    #[command(after_help = "Example:\n  phananh quarantine list")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// One item; `--raw` writes its raw bytes to stdout.
    #[command(after_help = "Example:\n  phananh quarantine show 12 --raw > item.eml")]
    Show {
        id: i64,
        #[arg(long)]
        raw: bool,
    },
    /// Parse items again (after a fix or a raised limit).
    #[command(
        after_help = "Examples:\n  phananh quarantine retry 12\n  phananh quarantine retry --all"
    )]
    Retry {
        ids: Vec<i64>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AcksCommand {
    /// Counts by channel, state and reason, then the acknowledgements not sent (or all with --all).
    /// No addresses are shown: tracking codes say which report.
    #[command(after_help = "Example:\n  phananh acks list")]
    List {
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Send dead acknowledgements again (all of them, or the given ids; a given id may also be a
    /// suppressed one). One that died mid-send may then reach the citizen twice.
    #[command(after_help = "Examples:\n  phananh acks retry\n  phananh acks retry 7 9")]
    Retry { ids: Vec<i64> },
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Undelivered events by sink and state (or all with --all), with their last error.
    #[command(
        after_help = "Examples:\n  phananh outbox list\n  phananh outbox list --sink ops --state dead"
    )]
    List {
        #[arg(long)]
        all: bool,
        /// Only this sink's rows.
        #[arg(long)]
        sink: Option<String>,
        /// Only rows in this state: pending, retrying, dead or delivered.
        #[arg(long, value_parser = ["pending", "retrying", "dead", "delivered"])]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One event: its rows for every sink, their attempts and errors, and the payload stored.
    #[command(
        after_help = "Examples:\n  phananh outbox show 41\n  phananh outbox show 01JD8Z4W3V7Q2M5N6P8R9S0T1U.created"
    )]
    Show {
        /// A row number from `outbox list`, or an event id.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Make dead or retrying events due now (all of them, or the given ids). The running daemon
    /// picks them up within seconds.
    #[command(after_help = "Examples:\n  phananh outbox retry\n  phananh outbox retry 41 42")]
    Retry { ids: Vec<i64> },
    /// Send events again, delivered ones included (a consumer lost them): the given ids, or every
    /// row in a state (of one sink with --sink). Attempts start again from 0.
    #[command(
        after_help = "Examples:\n  phananh outbox requeue 41\n  phananh outbox requeue --sink ops --state dead\n  phananh outbox requeue --sink ops --state delivered"
    )]
    Requeue {
        ids: Vec<i64>,
        #[arg(long)]
        sink: Option<String>,
        #[arg(long, value_parser = ["pending", "retrying", "dead", "delivered"])]
        state: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = true)]
pub struct EraseArgs {
    /// The address the citizen wrote from (case does not matter).
    #[arg(long)]
    pub email: Option<String>,
    /// In any usual Vietnamese form ("0905 123 456", "+84905123456"); stored as E.164.
    #[arg(long, value_parser = e164)]
    pub phone: Option<String>,
    /// The Messenger page-scoped id.
    #[arg(long)]
    pub psid: Option<String>,
    /// The portal or app's user id.
    #[arg(long)]
    pub app_user: Option<String>,
}

fn e164(raw: &str) -> Result<String, String> {
    crate::pipeline::phone::normalize_phone(raw)
        .ok_or_else(|| "not a phone number phananh would have stored".to_string())
}
