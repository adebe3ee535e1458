//! Forwarding to the spool: retries, dead letters, `outbox retry`, atomic files.

use super::common::{Env, fixture};

#[test]
fn a_failing_sink_retries_then_dies_and_outbox_retry_resends() {
    // The spool path is a regular file, so every write fails until the operator fixes it.
    let env = Env::new(
        "[forward]\nmax_attempts = 2\nbackoff_base = \"10ms\"\nbackoff_max = \"20ms\"",
        "",
    );
    std::fs::create_dir_all(env.path("state")).unwrap();
    std::fs::write(env.path("state/spool"), "not a folder").unwrap();
    let out = env.cli_ok(&[
        "ingest",
        "--channel",
        "mail",
        fixture("01-utf8-nfc.eml").to_str().unwrap(),
    ]);
    assert!(
        out.contains("new report") && out.contains("Forwarded 0 events"),
        "{out}"
    );
    let list = env.cli_ok(&["outbox", "list"]);
    assert!(list.contains("spool: 1 retrying"), "{list}");
    assert!(list.contains("cannot create"), "{list}");

    std::thread::sleep(std::time::Duration::from_millis(100));
    let out = env.cli_ok(&[
        "ingest",
        "--channel",
        "mail",
        fixture("02-nfd.eml").to_str().unwrap(),
    ]);
    assert!(out.contains("Forwarded 0 events"), "{out}");
    let list = env.cli_ok(&["outbox", "list"]);
    assert!(list.contains("spool: 1 dead"), "{list}");

    std::fs::remove_file(env.path("state/spool")).unwrap();
    let retry = env.cli_ok(&["outbox", "retry"]);
    assert!(retry.contains("events due again"), "{retry}");
    let out = env.cli_ok(&[
        "ingest",
        "--channel",
        "mail",
        fixture("03-windows-1258-qp.eml").to_str().unwrap(),
    ]);
    assert!(out.contains("Forwarded 3 events"), "{out}");
    assert_eq!(env.spool_events().len(), 3);
    assert!(
        env.cli_ok(&["outbox", "list"])
            .contains("spool: 3 delivered")
    );
}

#[test]
fn spool_files_are_complete_json_named_by_event_id() {
    let env = Env::new("", "");
    env.cli_ok(&[
        "ingest",
        "--channel",
        "mail",
        fixture("05-alternative-inline-image.eml").to_str().unwrap(),
    ]);
    let entries: Vec<_> = std::fs::read_dir(env.spool())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    let files: Vec<String> = entries
        .iter()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.spool().join(&files[0])).unwrap())
            .unwrap();
    assert_eq!(
        files[0],
        format!("{}.json", event["event_id"].as_str().unwrap())
    );
    assert_eq!(event["event"], "report.created");
    // Nothing is left half-written in the temporary folder.
    assert_eq!(
        std::fs::read_dir(env.spool().join(".tmp")).unwrap().count(),
        0
    );
}

#[test]
fn a_masked_sink_gets_masked_contact_and_a_none_sink_gets_none() {
    let env = Env::new(
        "[sinks.masked]\nkind = \"spool\"\ndir = \"masked\"\ncontact = \"masked\"\n[sinks.anon]\nkind = \"spool\"\ndir = \"anon\"\ncontact = \"none\"",
        "",
    );
    env.cli_ok(&[
        "ingest",
        "--channel",
        "mail",
        fixture("01-utf8-nfc.eml").to_str().unwrap(),
    ]);
    let read = |dir: &str| -> serde_json::Value {
        let d = env.path(&format!("state/{dir}"));
        let f = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.is_file())
            .unwrap();
        serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap()
    };
    // The default spool sink is replaced when sinks are configured.
    assert!(!env.spool().exists());
    let masked = read("masked");
    assert_eq!(masked["reporter"]["phone"], "09******56");
    assert_eq!(masked["reporter"]["email"], "a***@e***.com");
    assert_eq!(masked["reporter"]["name"], "N. V. A.");
    let anon = read("anon");
    assert!(anon.get("reporter").is_none(), "{anon}");
    // The mail is signed and carries the number in its text: neither reaches these sinks.
    for event in [&masked, &anon] {
        let text = event.to_string();
        assert!(
            !text.contains("Nguyễn Văn An") && !text.contains("0905 123 456"),
            "{text}"
        );
        assert!(
            event["description"]
                .as_str()
                .unwrap()
                .contains("09******56")
        );
    }
}
