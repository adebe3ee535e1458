//! The CLI as an operator uses it: check, ingest, reports, quarantine.

use super::common::{Env, all_fixtures, fixture};

#[test]
fn check_accepts_the_shipped_quickstart() {
    let out = std::process::Command::new(super::common::BIN)
        .args(["check", "--config"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/quickstart.toml"
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("✓ ") && stdout.contains("channels/mail.toml"),
        "{stdout}"
    );
}

#[test]
fn check_names_the_file_line_and_column_of_a_mistyped_key_and_fails() {
    let env = Env::new("", "scan_intervall = \"5s\"");
    std::fs::write(
        env.path("channels/broken.toml"),
        "kind = \"maildir\"\npath = [\n",
    )
    .unwrap();
    let out = env.cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("✓ ") && stdout.contains("phananh.toml"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✗ ") && stdout.contains("mail.toml:4:1: unknown field `scan_intervall`"),
        "{stdout}"
    );
    // Both broken files are reported in one run.
    assert!(stdout.contains("broken.toml:"), "{stdout}");
    assert!(stdout.contains("2 errors"), "{stdout}");
}

#[test]
fn the_daemon_refuses_to_start_on_a_bad_config() {
    let env = Env::new("tracking_prefx = \"PA\"", "");
    let out = env.cli(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("phananh.toml:3:1: unknown field `tracking_prefx`"),
        "{stderr}"
    );
}

#[test]
fn ingest_prints_one_line_per_file_and_re_ingest_is_idempotent() {
    let env = Env::new("", "");
    let files: Vec<String> = all_fixtures()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["ingest", "--channel", "mail"];
    args.extend(files.iter().map(|s| s.as_str()));
    let first = env.cli_ok(&args);
    let lines: Vec<&str> = first.lines().filter(|l| l.contains(".eml")).collect();
    assert_eq!(lines.len(), files.len(), "{first}");
    // 02 is another citizen's report of 01's pothole (the same words, decomposed Unicode): the
    // same incident, linked to 01.
    assert_eq!(first.matches("new report PA-").count(), 10, "{first}");
    assert!(
        first
            .lines()
            .any(|l| l.contains("02-nfd.eml") && l.contains("duplicate PA-")),
        "{first}"
    );
    assert!(
        first.contains("11-same-report-twice-b.eml") && first.contains("duplicate PA-"),
        "{first}"
    );
    assert!(
        first.contains("quarantined #") && first.contains("no sender address"),
        "{first}"
    );
    assert!(
        first.contains("Forwarded 11 events to sink spool."),
        "{first}"
    );
    assert_eq!(env.spool_events().len(), 11);

    // Everything again: the same receipts, nothing new stored or forwarded.
    let second = env.cli_ok(&args);
    assert_eq!(
        second.matches("received before:").count(),
        files.len(),
        "{second}"
    );
    for (a, b) in first
        .lines()
        .zip(second.lines())
        .filter(|(a, _)| a.contains(".eml"))
    {
        assert_eq!(b.replace("received before: ", ""), a, "receipt changed");
    }
    assert!(second.contains("Forwarded 0 events"), "{second}");
    let n: i64 = env
        .db()
        .query_row("SELECT count(*) FROM reports", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 12);
    let automated: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM inbox WHERE automated IS NOT NULL AND report_id IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(automated, 3);
    assert_eq!(env.spool_events().len(), 11);
}

#[test]
fn reports_can_be_listed_shown_by_code_in_any_case_and_exported() {
    let env = Env::new("", "");
    let code = env.ingest_fixture("06-photo-exif-hue.eml");
    let list = env.cli_ok(&["reports", "list"]);
    assert!(list.contains(&code), "{list}");
    let show = env.cli_ok(&["reports", "show", &code.to_lowercase().replace('-', " ")]);
    assert!(
        show.contains(&code) && show.contains("16.463700, 107.590900 (Exif)"),
        "{show}"
    );
    let export = env.cli_ok(&["reports", "export", "--format", "jsonl"]);
    let event: serde_json::Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
    assert_eq!(event["tracking_code"], code.as_str());
    assert_eq!(event["schema"], "phananh.report/1");
    let missing = env.cli(&["reports", "show", "PA-2222-2222"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn a_quarantined_item_keeps_its_raw_bytes_and_can_be_retried_after_a_fix() {
    // A limit set too low quarantines a good message; raising it and retrying makes the report.
    let env = Env::new("", "max_message_size = \"1KB\"");
    let path = fixture("06-photo-exif-hue.eml");
    let out = env.cli_ok(&["ingest", "--channel", "mail", path.to_str().unwrap()]);
    assert!(out.contains("quarantined #1: message is"), "{out}");
    assert!(out.contains("over max_message_size"), "{out}");

    let list = env.cli_ok(&["quarantine", "list"]);
    assert!(
        list.contains("#1") && list.contains("max_message_size"),
        "{list}"
    );
    let raw = env.cli(&["quarantine", "show", "1", "--raw"]);
    assert_eq!(raw.stdout, std::fs::read(&path).unwrap());

    let still = env.cli(&["quarantine", "retry", "1"]);
    assert_eq!(still.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&still.stdout).contains("still quarantined"));

    let channel = env.path("channels/mail.toml");
    let text = std::fs::read_to_string(&channel)
        .unwrap()
        .replace("1KB", "10MB");
    std::fs::write(&channel, text).unwrap();
    let retried = env.cli_ok(&["quarantine", "retry", "--all"]);
    assert!(retried.contains("#1  new report PA-"), "{retried}");
    assert!(
        env.cli_ok(&["quarantine", "list"])
            .contains("Nothing in quarantine")
    );
    assert_eq!(env.spool_events().len(), 1);
    // The same message arriving again is recognised by its Message-ID now.
    let again = env.cli_ok(&["ingest", "--channel", "mail", path.to_str().unwrap()]);
    assert!(again.contains("received before: new report"), "{again}");
}

#[test]
fn the_database_and_state_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new("", "");
    env.cli_ok(&[
        "ingest",
        "--channel",
        "mail",
        fixture("01-utf8-nfc.eml").to_str().unwrap(),
    ]);
    let mode = |p: &str| std::fs::metadata(env.path(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("state/phananh.db"), 0o600);
    assert_eq!(mode("state"), 0o700);
    let journal: String = env
        .db()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[test]
fn a_quarantined_message_without_message_id_becomes_a_report_on_retry() {
    // Regression: its key is its content hash, so the retry found its own row, marked it
    // "resolved" with no report, and the message was lost from quarantine and from reports.
    let env = Env::new("", "max_message_size = \"100B\"");
    let path = fixture("10-no-message-id.eml");
    let out = env.cli_ok(&["ingest", "--channel", "mail", path.to_str().unwrap()]);
    assert!(out.contains("quarantined #1"), "{out}");
    let channel = env.path("channels/mail.toml");
    let text = std::fs::read_to_string(&channel)
        .unwrap()
        .replace("100B", "10MB");
    std::fs::write(&channel, text).unwrap();
    let retried = env.cli_ok(&["quarantine", "retry", "1"]);
    assert!(retried.contains("#1  new report PA-"), "{retried}");
    let n: i64 = env
        .db()
        .query_row("SELECT count(*) FROM reports", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(env.spool_events().len(), 1);
    let again = env.cli_ok(&["ingest", "--channel", "mail", path.to_str().unwrap()]);
    assert!(again.contains("received before: new report"), "{again}");
}
