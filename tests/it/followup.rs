//! A reporter answering with their tracking code adds to their report; a stranger citing the code
//! gets a new report that points at it.

use super::common::Env;
use base64::Engine;

pub(super) fn reply(from: &str, code: &str, text: &str, photo: bool) -> Vec<u8> {
    let mut mail = format!(
        "From: {from}\r\nTo: dttm@hue.example.vn\r\nSubject: Re: [{code}] =?UTF-8?Q?=E1=BB=94_g=C3=A0?=\r\n\
         Message-ID: <reply-{}@example.com>\r\nIn-Reply-To: <{code}.20261125@hue.example.vn>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n",
        from.len() + text.len()
    );
    if photo {
        let jpeg = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/media/hue-exif.jpg"
        ))
        .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(jpeg);
        mail.push_str(&format!(
            "--b\r\nContent-Type: image/jpeg\r\nContent-Disposition: attachment; filename=\"o-ga.jpg\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n"
        ));
    }
    mail.push_str("--b--\r\n");
    mail.into_bytes()
}

fn ingest(env: &Env, name: &str, bytes: &[u8]) -> String {
    let path = env.path(name);
    std::fs::write(&path, bytes).unwrap();
    env.cli_ok(&["ingest", "--channel", "mail", path.to_str().unwrap()])
}

#[test]
fn the_reporters_reply_with_a_photo_joins_their_report() {
    let env = Env::new("", "");
    let code = env.ingest_fixture("01-utf8-nfc.eml");

    let follow = reply(
        "An <AN.NGUYEN@example.com>",
        &code,
        "Ảnh ổ gà chụp sáng nay.",
        true,
    );
    let out = ingest(&env, "follow.eml", &follow);
    assert!(out.contains(&format!("follow-up to {code}")), "{out}");
    assert!(out.contains("Forwarded 1 events"), "{out}");
    let n: i64 = env
        .db()
        .query_row("SELECT count(*) FROM reports", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "a follow-up is not a new report");

    let events = env.spool_events();
    let updated = events
        .iter()
        .find(|e| e["event"] == "report.updated")
        .expect("an updated event");
    assert_eq!(updated["tracking_code"], code.as_str());
    assert_eq!(updated["media"][0]["name"], "o-ga.jpg");
    assert_eq!(updated["location"]["source"], "exif");
    assert_eq!(updated["update"]["description"], "Ảnh ổ gà chụp sáng nay.");
    assert!(updated["event_id"].as_str().unwrap().contains(".updated."));

    // The updated event honours the published contract.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/report.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(updated)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");

    // Delivered again: the same receipt, nothing new forwarded.
    let again = ingest(&env, "follow.eml", &follow);
    assert!(
        again.contains(&format!("received before: follow-up to {code}")),
        "{again}"
    );
    assert!(again.contains("Forwarded 0 events"), "{again}");
}

#[test]
fn a_masked_sink_does_not_see_the_number_in_a_follow_up() {
    let env = Env::new(
        "[sinks.masked]\nkind = \"spool\"\ndir = \"masked\"\ncontact = \"masked\"",
        "",
    );
    let code = env.ingest_fixture("01-utf8-nfc.eml");
    ingest(
        &env,
        "f.eml",
        &reply(
            "an.nguyen@example.com",
            &code,
            "Gọi tôi: 0914 567 890.",
            false,
        ),
    );
    let dir = env.path("state/masked");
    let texts: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(texts.len(), 2);
    assert!(
        texts
            .iter()
            .any(|t| t.contains("\"update\"") && t.contains("09******90")),
        "{texts:?}"
    );
    assert!(
        texts.iter().all(|t| !t.contains("0914 567 890")),
        "{texts:?}"
    );
}

#[test]
fn a_stranger_citing_a_code_gets_a_new_report_linked_to_it() {
    let env = Env::new("", "");
    let code = env.ingest_fixture("01-utf8-nfc.eml");
    let out = ingest(
        &env,
        "stranger.eml",
        &reply(
            "Kẻ lạ <la@example.org>",
            &code,
            "Tôi cũng thấy ổ gà này.",
            false,
        ),
    );
    assert!(out.contains("new report PA-"), "{out}");
    assert!(!out.contains(&format!("new report {code}")), "{out}");
    let events = env.spool_events();
    let new = events
        .iter()
        .find(|e| e["tracking_code"] != code.as_str())
        .unwrap();
    assert_eq!(new["related"][0]["tracking_code"], code.as_str());
    assert_eq!(new["related"][0]["reason"], "cites_code");
    assert!(events.iter().all(|e| e["event"] == "report.created"));
}
