//! Golden tests: each fixture's normalised form is checked in beside it under
//! fixtures/email/expected/. After an intended change, regenerate with
//! `UPDATE_GOLDEN=1 cargo test --test it golden` and review the diff like code.

use super::common::all_fixtures;
use phananh::channels::email::{Parsed, normalize, parse};
use phananh::config::EmailConfig;

fn render(raw: &[u8]) -> serde_json::Value {
    match parse(
        raw,
        &own_limits(),
        chrono_tz::Asia::Ho_Chi_Minh,
        "chua_phan_loai",
    ) {
        Ok(Parsed::Report(draft, blobs)) => serde_json::json!({
            "draft": draft,
            "blobs": blobs.iter().map(|b| serde_json::json!({"sha256": b.sha256, "size": b.bytes.len()})).collect::<Vec<_>>(),
        }),
        Ok(Parsed::Automated {
            rule,
            external_id,
            bounce,
        }) => {
            let mut v = serde_json::json!({ "automated": rule, "external_id": external_id });
            if let Some(b) = bounce {
                v["bounce"] =
                    serde_json::json!({ "message_ids": b.message_ids, "permanent": b.permanent });
            }
            v
        }
        Err(reject) => serde_json::json!({ "quarantined": reject.0 }),
    }
}

/// The centre's own address, as the quick start configures it.
fn own_limits() -> EmailConfig {
    EmailConfig {
        own_addresses: vec!["dttm@hue.example.vn".into()],
        ..EmailConfig::default()
    }
}

#[test]
fn every_fixture_matches_its_expected_output() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let fixtures = all_fixtures();
    assert!(fixtures.len() >= 13, "fixtures missing: {fixtures:?}");
    for path in fixtures {
        let raw = std::fs::read(&path).unwrap();
        let got = render(&raw);
        let expected_path = path
            .parent()
            .unwrap()
            .join("expected")
            .join(path.file_stem().unwrap())
            .with_extension("json");
        let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
        if update {
            std::fs::create_dir_all(expected_path.parent().unwrap()).unwrap();
            std::fs::write(&expected_path, &text).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} missing; run with UPDATE_GOLDEN=1",
                expected_path.display()
            )
        });
        let expected: serde_json::Value = serde_json::from_str(&expected).unwrap();
        if expected != got {
            failures.push(format!(
                "{}:\n--- expected\n{}\n--- got\n{text}",
                path.display(),
                serde_json::to_string_pretty(&expected).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn draft(name: &str) -> serde_json::Value {
    let raw = std::fs::read(super::common::fixture(name)).unwrap();
    render(&raw)["draft"].clone()
}

// The properties the golden files are meant to pin, stated on their own so a careless
// UPDATE_GOLDEN cannot silently accept a regression in them.

#[test]
fn nfd_and_windows_1258_text_comes_out_nfc() {
    let nfc = draft("01-utf8-nfc.eml");
    let nfd = draft("02-nfd.eml");
    assert_eq!(nfc["title"], nfd["title"]);
    assert_eq!(nfc["description"], nfd["description"]);
    let cp = draft("03-windows-1258-qp.eml");
    let title = cp["title"].as_str().unwrap();
    use unicode_normalization::UnicodeNormalization;
    assert_eq!(title, title.nfc().collect::<String>());
    assert!(
        title.contains("Hùng Vương") || cp["description"].as_str().unwrap().contains("Hùng Vương"),
        "{cp:#}"
    );
    assert_eq!(cp["reporter"]["phone"], "+84905123457");
}

#[test]
fn html_only_mail_becomes_clean_text() {
    let d = draft("04-html-only.eml");
    let desc = d["description"].as_str().unwrap();
    assert!(
        !desc.contains('<') && !desc.contains("&nbsp;") && !desc.contains("&amp;"),
        "{desc}"
    );
    assert!(desc.contains("An Cựu"), "{desc}");
    assert_eq!(d["reporter"]["phone"], "+84914222333");
}

#[test]
fn exif_position_and_time_become_the_location() {
    let d = draft("06-photo-exif-hue.eml");
    let loc = &d["location"];
    assert_eq!(loc["source"], "exif");
    assert!(
        (loc["lat"].as_f64().unwrap() - 16.4637).abs() < 1e-4,
        "{loc}"
    );
    assert!(
        (loc["lon"].as_f64().unwrap() - 107.5909).abs() < 1e-4,
        "{loc}"
    );
    assert_eq!(loc["taken_at"], "2026-11-20T08:10:42+07:00");
    assert_eq!(d["media"][0]["content_type"], "image/jpeg");
    assert_eq!(d["media"][0]["name"], "IMG_2041.jpg");
}

#[test]
fn rfc2231_attachment_names_are_decoded() {
    let d = draft("08-attachment-rfc2231.eml");
    assert_eq!(
        d["media"][0]["name"],
        "Ảnh hiện trường đường Nguyễn Huệ.jpg"
    );
}

#[test]
fn replies_keep_only_the_new_text_and_the_quote_separately() {
    let d = draft("09-reply-quoting.eml");
    let desc = d["description"].as_str().unwrap();
    assert!(desc.contains("vẫn chưa được sửa"), "{desc}");
    assert!(!desc.contains("đã viết") && !desc.contains('>'), "{desc}");
    assert!(d["quoted"].as_str().unwrap().contains("đã viết"));
    assert_eq!(d["title"], "[PA-7K3M-Q2XD] Ổ gà trên đường Lê Lợi");
}

#[test]
fn forwarded_content_stays_and_is_not_the_senders_contact() {
    let d = draft("07-forwarded.eml");
    let desc = d["description"].as_str().unwrap();
    assert!(desc.contains("Forwarded message"));
    assert!(!d["title"].as_str().unwrap().starts_with("Fwd"));
    // The old 11-digit number in the forwarded text is the father's, not the sender's.
    assert!(desc.contains("0169 567 8945"), "{desc}");
    assert!(d["reporter"].get("phone").is_none(), "{}", d["reporter"]);
}

#[test]
fn old_eleven_digit_mobiles_are_converted() {
    let raw = "From: A <a@example.com>\r\nSubject: x\r\n\r\nLiên hệ: 0169 567 8945\r\n";
    let (draft, _) = normalize(
        raw.as_bytes(),
        &EmailConfig::default(),
        chrono_tz::Asia::Ho_Chi_Minh,
        "x",
    )
    .unwrap();
    assert_eq!(draft.reporter.phone.as_deref(), Some("+84395678945"));
}

#[test]
fn a_message_without_message_id_gets_a_content_hash_id() {
    let d = draft("10-no-message-id.eml");
    assert!(d["external_id"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn a_message_without_sender_is_quarantined() {
    let raw = std::fs::read(super::common::fixture("12-malformed-mime.eml")).unwrap();
    let got = render(&raw);
    assert!(
        got["quarantined"]
            .as_str()
            .unwrap()
            .contains("no sender address"),
        "{got}"
    );
}

#[test]
fn auto_replies_bounces_and_lists_are_never_reports() {
    let rule = |name: &str| {
        let raw = std::fs::read(super::common::fixture(name)).unwrap();
        render(&raw)["automated"].as_str().map(str::to_string)
    };
    assert_eq!(rule("13-auto-reply.eml").as_deref(), Some("auto_submitted"));
    assert_eq!(rule("14-bounce.eml").as_deref(), Some("bounce"));
    assert_eq!(rule("15-mailing-list.eml").as_deref(), Some("precedence"));
    // Our own acknowledgement coming back (the Message-ID is at our domain) is caught too.
    let raw = std::fs::read(super::common::fixture("01-utf8-nfc.eml")).unwrap();
    let text = String::from_utf8(raw).unwrap().replace(
        "<CAH7pQx2mV9kR3tLw8nZ4bYc6uE1sJd0fGa5@mail.example.com>",
        "<PA-7K3M-Q2XD.01jabcdef@hue.example.vn>",
    );
    let Ok(Parsed::Automated { rule: own, .. }) = parse(
        text.as_bytes(),
        &own_limits(),
        chrono_tz::Asia::Ho_Chi_Minh,
        "x",
    ) else {
        panic!("our own Message-ID must be recognised");
    };
    assert_eq!(own, "own_message_id");
    for name in [
        "01-utf8-nfc.eml",
        "07-forwarded.eml",
        "09-reply-quoting.eml",
    ] {
        assert_eq!(rule(name), None, "{name} is a person's mail");
    }
}
