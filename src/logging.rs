//! Logs go to stderr only; journald adds its own timestamps, so we drop ours under systemd.
//! Level from `PHANANH_LOG` (or `RUST_LOG`), e.g. `PHANANH_LOG=phananh=debug`.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub fn init(default_level: &str) {
    let asked = std::env::var("PHANANH_LOG").or_else(|_| std::env::var("RUST_LOG"));
    // lapin logs every failed broker connection at ERROR, three lines each time; the amqp sink
    // already says it once (WARN, with its backoff) and shows it in /readyz. Asked by name, it
    // still logs (`PHANANH_LOG=info,lapin=debug`), but lapin's own debug lines include returned
    // message bodies, personal data and all: only on a test broker.
    let quiet_lapin = !asked.as_deref().is_ok_and(|a| a.contains("lapin"));
    let mut filter = asked
        .map(EnvFilter::new)
        .unwrap_or_else(|_| EnvFilter::new(default_level));
    if quiet_lapin {
        filter = filter.add_directive("lapin=off".parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
