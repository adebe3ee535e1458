//! Hostile and broken input: each gives a clear outcome in bounded time and loses nothing.

use super::common::{Env, message};
use phananh::channels::email::normalize;
use phananh::config::EmailConfig;

const TZ: chrono_tz::Tz = chrono_tz::Asia::Ho_Chi_Minh;

fn mail(headers: &str, body: &str) -> Vec<u8> {
    format!("From: Test <t@example.com>\r\nMessage-ID: <h@example.com>\r\n{headers}\r\n\r\n{body}")
        .into_bytes()
}

/// A multipart message with `n` small attachments.
pub fn many_parts(n: usize) -> Vec<u8> {
    let mut body = String::from(
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nNhiều tệp đính kèm.\r\n",
    );
    for i in 0..n {
        body.push_str(&format!(
            "--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=\"f{i}.txt\"\r\n\r\npart {i}\r\n"
        ));
    }
    body.push_str("--b--\r\n");
    mail(
        "Subject: many\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"",
        &body,
    )
}

/// Multiparts nested `depth` deep.
pub fn deep_nesting(depth: usize) -> Vec<u8> {
    let mut body = String::from("Content-Type: text/plain\r\n\r\nđáy\r\n");
    for i in (0..depth).rev() {
        body = format!(
            "Content-Type: multipart/mixed; boundary=\"n{i}\"\r\n\r\n--n{i}\r\n{body}--n{i}--\r\n"
        );
    }
    format!("From: Test <t@example.com>\r\nSubject: deep\r\nMIME-Version: 1.0\r\n{body}")
        .into_bytes()
}

/// `size` bytes as a base64 body, in lines of 76 as mailers write it.
fn base64_lines(size: usize) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(vec![0x5Au8; size]);
    b64.as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[test]
fn a_30_mb_attachment_is_listed_as_omitted_and_the_report_is_made() {
    let wrapped = base64_lines(30_000_000);
    let raw = mail(
        "Subject: Video ngập\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"",
        &format!(
            "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nĐường ngập sâu.\r\n--b\r\nContent-Type: video/mp4\r\nContent-Disposition: attachment; filename=\"ngap.mp4\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{wrapped}\r\n--b--\r\n"
        ),
    );
    let (draft, blobs) = normalize(&raw, &EmailConfig::default(), TZ, "x").unwrap();
    assert!(blobs.is_empty());
    assert_eq!(draft.omitted_media.len(), 1);
    assert_eq!(draft.omitted_media[0].reason, "too_large");
    assert_eq!(draft.omitted_media[0].size, 30_000_000);
    assert_eq!(draft.omitted_media[0].name.as_deref(), Some("ngap.mp4"));
    assert_eq!(draft.description, "Đường ngập sâu.");

    // Over the message limit: quarantined whole, raw kept, with the sizes in the reason.
    let small = EmailConfig {
        max_message_size: 10_000_000,
        ..EmailConfig::default()
    };
    let reject = normalize(&raw, &small, TZ, "x").unwrap_err();
    assert!(
        reject.0.contains("over max_message_size 10.0 MB"),
        "{}",
        reject.0
    );
}

#[test]
fn five_thousand_parts_keep_the_first_attachments_and_list_the_rest() {
    let started = std::time::Instant::now();
    let (draft, blobs) = normalize(&many_parts(5_000), &EmailConfig::default(), TZ, "x").unwrap();
    assert_eq!(draft.media.len(), 50);
    assert_eq!(blobs.len(), 50);
    assert_eq!(draft.omitted_media.len(), 4_950);
    assert!(draft.omitted_media.iter().all(|m| m.reason == "too_many"));
    assert_eq!(draft.description, "Nhiều tệp đính kèm.");
    // Not a timing assertion on speed, a guard against a pathological blow-up (minutes).
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn deep_nesting_and_garbage_do_not_panic() {
    for raw in [
        deep_nesting(500),
        b"\x00\x00\x00".to_vec(),
        Vec::new(),
        mail(
            "Subject: =?utf-8?B?!!!broken?=\r\nContent-Transfer-Encoding: base64",
            "@@@not base64@@@",
        ),
        mail(
            "Subject: qp\r\nContent-Transfer-Encoding: quoted-printable",
            "=ZZ=E1=BB=\r\n=\r\n",
        ),
        mail("Subject: nul\u{0}byte", "text\u{0}with NUL"),
        mail(
            &format!("Subject: {}", "x".repeat(1_000_000)),
            "long header",
        ),
    ] {
        let _ = normalize(&raw, &EmailConfig::default(), TZ, "x");
    }
}

#[test]
fn invalid_utf8_in_headers_still_makes_a_report() {
    let mut raw = b"From: =?utf-8?Q?Ng=C6=B0=E1=BB=9Di_d=C3=A2n?= <d@example.com>\r\nSubject: C\xe2y \xff\xfe \xc4\x91\xe1\xbb\x95 \r\n".to_vec();
    raw.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n\r\nC\xc3\xa2y \xc4\x91\xe1\xbb\x95 tr\xc3\xaan \xc4\x91\xc6\xb0\xe1\xbb\x9dng.\r\n");
    let (draft, _) = normalize(&raw, &EmailConfig::default(), TZ, "x").unwrap();
    assert_eq!(draft.description, "Cây đổ trên đường.");
    assert!(draft.title.contains("đổ"), "{}", draft.title);
    assert_eq!(draft.reporter.name.as_deref(), Some("Người dân"));
}

#[test]
fn garbage_given_to_ingest_is_quarantined_with_its_reason() {
    let env = Env::new("", "");
    let junk = env.path("junk.eml");
    std::fs::write(&junk, b"\x00\x01garbage").unwrap();
    let good = env.path("good.eml");
    std::fs::write(&good, message(1)).unwrap();
    let out = env.cli_ok(&[
        "ingest",
        "--channel",
        "mail",
        junk.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert!(out.contains("quarantined #1"), "{out}");
    assert!(out.contains("new report"), "{out}");
    let missing = env.cli(&["ingest", "--channel", "mail", "/nonexistent/x.eml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stdout).contains("cannot read"));
}

/// The daemon's resident memory, from /proc.
fn rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn base64_attachment(size: usize) -> Vec<u8> {
    let wrapped = base64_lines(size);
    format!(
        "From: Test <big@example.com>\r\nMessage-ID: <big@example.com>\r\nSubject: Video\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Đường ngập sâu.\r\n--b\r\nContent-Type: video/mp4\r\nContent-Disposition: attachment; filename=\"v.mp4\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{wrapped}\r\n--b--\r\n"
    )
    .into_bytes()
}

/// The catalogue, through the running daemon's Maildir channel: each message ends as a report
/// or in quarantine with its raw bytes, none is left behind, none is lost, and the daemon's
/// memory stays bounded (the largest input is 50 MB of attachment, 68 MB as base64).
#[test]
fn the_hostile_mail_catalogue_through_the_daemon_loses_nothing() {
    let env = Env::new("", "");
    // Each its own Message-ID, so none is taken for a copy of another. Bytes, not text: the
    // invalid UTF-8 and NUL cases must arrive as they are.
    let with_id = |n: usize, mut raw: Vec<u8>| -> Vec<u8> {
        let id = b"<h@example.com>";
        if let Some(at) = raw.windows(id.len()).position(|w| w == id) {
            raw.splice(
                at..at + id.len(),
                format!("<hostile-{n}@example.com>").into_bytes(),
            );
        }
        raw
    };
    let mut broken_utf8 = mail("Subject: C\u{e2}y", "x").to_vec();
    broken_utf8.extend_from_slice(b"\xff\xfe\xc4 bytes \xe1\xbb");
    let catalogue: Vec<(&str, Vec<u8>)> = vec![
        ("ten thousand parts", many_parts(10_000)),
        ("500 levels of nesting", deep_nesting(500)),
        (
            "a 1 MB header",
            mail(&format!("Subject: {}", "x".repeat(1 << 20)), "long header"),
        ),
        (
            "NUL bytes",
            mail("Subject: nul\u{0}byte", "text\u{0}with NUL"),
        ),
        ("invalid UTF-8", broken_utf8),
        (
            "broken base64",
            mail(
                "Subject: b64\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64",
                "@@@not base64@@@\r\nxx==yy\r\n",
            ),
        ),
        (
            "broken quoted-printable",
            mail(
                "Subject: qp\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable",
                "=ZZ=E1=BB=\r\n=\r\nC=C3=A2y =C4=91=E1=BB=95\r\n",
            ),
        ),
        ("an empty file", Vec::new()),
        ("binary garbage", b"\x00\x01\x02garbage\xff".to_vec()),
        ("a 50 MB attachment", base64_attachment(50_000_000)),
    ];
    let n = catalogue.len();
    let mut bytes = 0;
    for (i, (_, raw)) in catalogue.into_iter().enumerate() {
        let raw = with_id(i, raw);
        bytes += raw.len() as i64;
        env.deliver(&format!("h{i}"), &raw);
    }
    let daemon = env.start();
    assert!(
        super::common::wait_for(std::time::Duration::from_secs(120), || env
            .count(&env.maildir().join("new"), "")
            == 0),
        "{}",
        env.log()
    );
    let db = env.db();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT count(*) FROM inbox"),
        n as i64,
        "one row per message"
    );
    // Every message's bytes are kept whole: in the database, or (over max_message_size) as the
    // file itself in the Maildir's quarantine folder, with only its head in the database.
    let set_aside: i64 = std::fs::read_dir(env.maildir().join(".Quarantine/cur"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len() as i64)
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(
        count(
            "SELECT coalesce(sum(length(raw)), 0) FROM inbox WHERE reason IS NULL OR reason NOT LIKE '%max_message_size%'"
        ) + set_aside,
        bytes,
        "every message's raw bytes are kept, quarantined ones too"
    );
    let reasons: Vec<String> = db
        .prepare("SELECT reason FROM inbox WHERE status = 'quarantined'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        reasons.iter().all(|r| !r.trim().is_empty()),
        "every quarantined item says why: {reasons:?}"
    );
    assert!(
        count("SELECT count(*) FROM reports") >= (n - reasons.len()) as i64,
        "the rest became reports"
    );
    assert!(super::common::http_get(env.port, "/healthz").is_some_and(|b| b.contains("ok")));
    let peak = rss_mb(daemon.id());
    assert!(peak < 600, "peak RSS {peak} MB for a 68 MB message");
    eprintln!(
        "hostile mail catalogue: peak RSS {peak} MB, {} quarantined",
        reasons.len()
    );
}
