//! Retention: `phananh purge` leaves reports without anyone's personal data, on disk too.

use super::common::Env;

#[test]
fn purge_anonymises_old_reports_and_leaves_no_personal_data_in_the_file() {
    let env = Env::new("", "");
    let code = env.ingest_fixture("01-utf8-nfc.eml");
    env.ingest_fixture("06-photo-exif-hue.eml");
    let out = env.cli_ok(&["purge", "--older-than", "1h"]);
    assert!(
        out.contains("0 reports anonymised"),
        "recent reports stay: {out}"
    );
    let db = std::fs::read(env.path("state/phananh.db")).unwrap();
    let has =
        |bytes: &[u8], needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        has(&db, "an.nguyen@example.com"),
        "the fixture's address is stored at first"
    );

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = env.cli_ok(&["purge", "--older-than", "1s"]);
    assert!(
        out.contains("2 reports anonymised") && out.contains("2 reporters deleted"),
        "{out}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&env.cli_ok(&["reports", "show", &code, "--json"])).unwrap();
    assert!(shown["reporter"].is_null(), "{shown}");
    assert!(
        !shown["description"].as_str().unwrap().is_empty(),
        "the incident stays: {shown}"
    );
    let text = shown.to_string();
    assert!(
        !text.contains("0905 123 456") && !text.contains("0905123456"),
        "{text}"
    );
    let conn = env.db();
    let raw: i64 = conn
        .query_row(
            "SELECT count(*) FROM inbox WHERE length(raw) > 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(raw, 0);
    let reporters: i64 = conn
        .query_row("SELECT count(*) FROM reporters", [], |r| r.get(0))
        .unwrap();
    assert_eq!(reporters, 0);
    drop(conn);
    // Nothing left in free pages or the WAL: the file itself no longer holds them.
    let mut bytes = std::fs::read(env.path("state/phananh.db")).unwrap();
    bytes.extend(std::fs::read(env.path("state/phananh.db-wal")).unwrap_or_default());
    for needle in [
        "an.nguyen@example.com",
        "0905 123 456",
        "+84905123456",
        "huy.dang@example.com",
    ] {
        assert!(
            !has(&bytes, needle),
            "{needle} is still in the database file"
        );
    }
    // A purge again finds nothing more; the reports are still there.
    let out = env.cli_ok(&["purge", "--older-than", "1s"]);
    assert!(out.contains("0 reports anonymised"), "{out}");
    assert!(env.cli_ok(&["reports", "list"]).contains(&code));
}

#[test]
fn erase_removes_one_citizens_data_whatever_its_age_and_nothing_of_anyone_elses() {
    let env = Env::new("", "");
    let code = env.ingest_fixture("01-utf8-nfc.eml");
    let other = env.ingest_fixture("06-photo-exif-hue.eml");
    // A later mail of hers that never became a report: quarantined, raw kept.
    let channel = env.path("channels/mail.toml");
    let text = std::fs::read_to_string(&channel).unwrap();
    std::fs::write(&channel, format!("{text}\nmax_message_size = \"1KB\"\n")).unwrap();
    let big = env.path("again.eml");
    let mail = std::fs::read_to_string(super::common::fixture("01-utf8-nfc.eml"))
        .unwrap()
        .replace(
            "CAH7pQx2mV9kR3tLw8nZ4bYc6uE1sJd0fGa5",
            "second-mail-from-an",
        )
        .replace("SĐT liên hệ", "Bổ sung thêm thông tin. SĐT liên hệ");
    std::fs::write(&big, mail).unwrap();
    let out = env.cli_ok(&["ingest", "--channel", "mail", big.to_str().unwrap()]);
    assert!(out.contains("quarantined"), "{out}");

    let none = env.cli_ok(&["erase", "--email", "nobody@example.com"]);
    assert!(none.contains("nothing was changed"), "{none}");
    let bad = env.cli(&["erase", "--phone", "số 12"]);
    assert_eq!(bad.status.code(), Some(2), "a wrong phone is refused");
    let usage = env.cli(&["erase"]);
    assert_eq!(usage.status.code(), Some(2), "an identifier is required");

    // Case differs from the stored address: an operator types what the citizen wrote.
    let out = env.cli_ok(&["erase", "--email", "An.Nguyen@Example.com"]);
    assert!(
        out.contains("1 reports anonymised")
            && out.contains("2 raw items emptied")
            && out.contains("1 reporters deleted"),
        "{out}"
    );
    assert!(!out.contains("an.nguyen"), "counts only: {out}");
    let shown: serde_json::Value =
        serde_json::from_str(&env.cli_ok(&["reports", "show", &code, "--json"])).unwrap();
    assert!(shown["reporter"].is_null(), "{shown}");
    assert!(!shown["description"].as_str().unwrap().is_empty());
    let kept: serde_json::Value =
        serde_json::from_str(&env.cli_ok(&["reports", "show", &other, "--json"])).unwrap();
    assert_eq!(
        kept["reporter"]["email"], "huy.dang@example.com",
        "another citizen's report is untouched: {kept}"
    );
    let outbox: Vec<String> = env
        .db()
        .prepare("SELECT payload FROM outbox")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(outbox.iter().all(|p| !p.contains("an.nguyen")));

    let has =
        |bytes: &[u8], needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    let mut bytes = std::fs::read(env.path("state/phananh.db")).unwrap();
    bytes.extend(std::fs::read(env.path("state/phananh.db-wal")).unwrap_or_default());
    for needle in ["an.nguyen@example.com", "0905 123 456", "+84905123456"] {
        assert!(!has(&bytes, needle), "{needle} is still in the database");
    }
    assert!(has(&bytes, "huy.dang@example.com"));
    // Her quarantined item stays listed (the incident may matter), without its bytes.
    let raw = env.cli(&["quarantine", "show", "3", "--raw"]);
    assert!(raw.stdout.is_empty(), "raw bytes of the erased item remain");
}
