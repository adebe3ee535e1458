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
