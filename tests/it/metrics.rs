//! `/metrics` after a scripted run: what an operator's Prometheus would scrape.

use super::common::{Env, fixture, http_get, message, wait_for};
use std::time::Duration;

/// The value of one sample line (`name{labels} value`), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn metrics_count_what_each_channel_stored_and_each_sink_delivered() {
    let env = Env::new("", "");
    let _daemon = env.start();
    for n in 0..3 {
        env.deliver(&format!("m{n}"), &message(n));
    }
    for name in ["12-malformed-mime.eml", "13-auto-reply.eml"] {
        env.deliver(name, &std::fs::read(fixture(name)).unwrap());
    }
    assert!(
        wait_for(Duration::from_secs(30), || env.spool_events().len() == 3
            && env.count(&env.maildir().join("new"), "") == 0),
        "{}",
        env.log()
    );
    let mut text = String::new();
    let delivered = wait_for(Duration::from_secs(10), || {
        text = http_get(env.port, "/metrics").unwrap_or_default();
        sample(
            &text,
            "phananh_sink_deliveries_total{sink=\"spool\",outcome=\"delivered\"}",
        ) == Some(3.0)
    });
    assert!(delivered, "{text}");
    assert!(
        text.starts_with("HTTP/1.1 200")
            && text.contains("content-type: application/openmetrics-text"),
        "{text}"
    );
    let items = |outcome: &str| {
        sample(
            &text,
            &format!(
                "phananh_channel_items_total{{channel=\"mail\",kind=\"maildir\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(items("created"), Some(3.0), "{text}");
    assert_eq!(items("quarantined"), Some(1.0), "{text}");
    assert_eq!(items("automated"), Some(1.0), "{text}");
    let last = sample(
        &text,
        "phananh_channel_last_item_timestamp_seconds{channel=\"mail\"}",
    )
    .unwrap();
    assert!((chrono::Utc::now().timestamp() as f64 - last).abs() < 120.0);
    assert_eq!(
        sample(
            &text,
            "phananh_sink_outbox_events{sink=\"spool\",state=\"pending\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "phananh_sink_delivery_latency_seconds_count{sink=\"spool\"}"
        ),
        Some(3.0),
        "{text}"
    );
    // Group commit may take several items at once: at least one commit, at most one per command.
    let commits = sample(&text, "phananh_writer_commit_seconds_count").unwrap();
    assert!(commits >= 1.0, "{text}");
    assert_eq!(
        sample(&text, "phananh_writer_commit_size_count"),
        Some(commits)
    );
    assert!(text.contains("phananh_writer_queue_depth"));
    // Bounded labels only: no address, name or id of anyone.
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(!body.contains('@'), "{body}");
}

#[test]
fn a_quiet_channel_shows_as_degraded_until_mail_arrives() {
    let env = Env::new("", "quiet_after = \"1s\"");
    let _daemon = env.start();
    let quiet = |env: &Env| {
        http_get(env.port, "/readyz")
            .is_some_and(|r| r.contains("\"status\":\"degraded\"") && r.contains("\"quiet_since\""))
    };
    assert!(
        wait_for(Duration::from_secs(10), || quiet(&env)),
        "{:?}\n{}",
        http_get(env.port, "/readyz"),
        env.log()
    );
    assert!(env.log().contains("Channel is quiet"), "{}", env.log());
    env.deliver("m1", &message(1));
    assert!(
        wait_for(Duration::from_secs(10), || http_get(env.port, "/readyz")
            .is_some_and(|r| r.contains("\"status\":\"ok\""))),
        "{:?}",
        http_get(env.port, "/readyz")
    );
    assert!(env.log().contains("Channel is receiving again"));
    // Silence again, and it says so again.
    assert!(wait_for(Duration::from_secs(10), || quiet(&env)));
}

#[test]
fn status_shows_the_daemon_channels_sinks_and_store_without_personal_data() {
    let env = Env::new("", "");
    env.ingest_fixture("01-utf8-nfc.eml");
    env.cli_ok(&[
        "ingest",
        "--channel",
        "mail",
        fixture("12-malformed-mime.eml").to_str().unwrap(),
    ]);
    let out = env.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "no daemon: not ready\n{text}");
    assert!(text.contains("not running"), "{text}");
    assert!(
        text.contains("store: 1 reports, 1 items quarantined"),
        "{text}"
    );

    let _daemon = env.start();
    assert!(wait_for(Duration::from_secs(10), || env
        .cli(&["status"])
        .status
        .success()));
    let text = env.cli_ok(&["status"]);
    assert!(text.contains(": ok"), "{text}");
    let mail = text
        .lines()
        .find(|l| l.trim_start().starts_with("mail "))
        .unwrap();
    assert!(
        mail.contains("running") && mail.contains("reports in 24 h: 1"),
        "{mail}"
    );
    let spool = text
        .lines()
        .find(|l| l.trim_start().starts_with("spool "))
        .unwrap();
    assert!(
        spool.contains("pending 0") && spool.contains("dead 0"),
        "{spool}"
    );
    assert!(!text.contains('@'), "{text}");
    let json: serde_json::Value = serde_json::from_str(&env.cli_ok(&["status", "--json"])).unwrap();
    assert_eq!(json["daemon"]["http_status"], 200);
    assert_eq!(json["store"]["reports"], 1);
}

/// The log check every daemon test ends with (`Env`'s drop) finds what it looks for, and not
/// what logs may carry.
#[test]
fn the_suite_wide_log_check_finds_personal_data_and_nothing_else() {
    use super::common::personal_data_in;
    for pd in [
        "an.nguyen@example.com",
        "0905 123 456",
        "0905123456",
        "+84905123456",
        "7310000000000042",
    ] {
        assert!(
            personal_data_in(&format!("INFO channel=fb Stored. {pd} x")).is_some(),
            "{pd}"
        );
    }
    let fine = "2026-12-02T04:00:00.123Z INFO channel=mail file=1700000000.M1P1.mx \
                tracking_code=PA-7K3M-Q2XD report=01JD8Z4W3V7Q2M5N6P8R9S0T1U Stored reports.";
    assert_eq!(personal_data_in(fine), None);
}
