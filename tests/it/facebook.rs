//! The facebook channel through its webhook, as Meta would call it: signed bodies with
//! `\u`-escaped Vietnamese, batches, repeats, out-of-order events, restarts mid-conversation.

use super::common::{Env, http_get, signal, wait_for};
use hmac::{KeyInit, Mac};
use std::io::{Read, Write};
use std::time::Duration;

pub(super) const SECRET: &str = "app-secret-thu-nghiem";
const OLD_SECRET: &str = "app-secret-cu";
const TOKEN: &str = "hue-intake-7f3c";
const PSID: &str = "7310000000000042";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/facebook/").to_string() + name)
        .unwrap()
}

/// `sha256=<hex>` over the bytes, as Meta signs them.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// An installation with one facebook channel `fb`; conversations close after `quiet`.
fn env(quiet: &str) -> Env {
    env_with(quiet, "")
}

fn env_with(quiet: &str, extra: &str) -> Env {
    env_full(quiet, extra, "")
}

/// `daemon_extra` goes to phananh.toml, `extra` to the channel file.
pub(super) fn env_full(quiet: &str, extra: &str, daemon_extra: &str) -> Env {
    let env = Env::new(daemon_extra, "");
    // Meta's CDN is not reachable from a test: its links are refused at once, not looked up.
    let hosts = if extra.contains("media_hosts") {
        ""
    } else {
        "media_hosts = [\"127.0.0.1\"]\n"
    };
    std::fs::remove_file(env.path("channels/mail.toml")).unwrap();
    // Two lines: the secret being rotated out still signs.
    std::fs::write(env.path("app.secret"), format!("{SECRET}\n{OLD_SECRET}\n")).unwrap();
    std::fs::write(env.path("verify.token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        env.path("channels/fb.toml"),
        format!(
            "kind = \"facebook\"\npage_id = \"104200000000001\"\napp_secret_file = \"../app.secret\"\n\
             verify_token_file = \"../verify.token\"\nassemble_quiet = \"{quiet}\"\nassemble_max = \"30s\"\n\
             update_window = \"1h\"\nmax_body_size = \"64KiB\"\n{hosts}{extra}\n"
        ),
    )
    .unwrap();
    env
}

/// POSTs a body; returns the status code.
pub(super) fn post(env: &Env, body: &[u8], signature: Option<&str>) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", env.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let sig = signature
        .map(|v| format!("X-Hub-Signature-256: {v}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST /webhooks/facebook/fb HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{sig}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn deliver(env: &Env, name: &str) {
    let body = fixture(name);
    assert_eq!(
        post(env, &body, Some(&sign(SECRET, &body))),
        200,
        "{name}\n{}",
        env.log()
    );
}

fn count(env: &Env, sql: &str) -> i64 {
    if !env.path("state/phananh.db").exists() {
        return 0;
    }
    env.db().query_row(sql, [], |r| r.get(0)).unwrap()
}

fn started(env: &Env) -> super::common::Daemon {
    let d = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || env
            .log()
            .contains("Facebook channel started")),
        "{}",
        env.log()
    );
    d
}

#[test]
fn the_handshake_answers_the_challenge_only_to_the_right_token() {
    let env = env("1s");
    let _d = started(&env);
    let ok = http_get(
        env.port,
        &format!("/webhooks/facebook/fb?hub.mode=subscribe&hub.challenge=1581440930&hub.verify_token={TOKEN}"),
    )
    .unwrap();
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.ends_with("\r\n\r\n1581440930"),
        "{ok}"
    );
    let bad = http_get(
        env.port,
        "/webhooks/facebook/fb?hub.mode=subscribe&hub.challenge=1&hub.verify_token=wrong",
    )
    .unwrap();
    assert!(bad.starts_with("HTTP/1.1 403"), "{bad}");
    let unknown = http_get(env.port, "/webhooks/facebook/nope?hub.mode=subscribe").unwrap();
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
}

#[test]
fn only_a_good_signature_over_the_exact_bytes_is_stored() {
    let env = env("1s");
    let _d = started(&env);
    let body = fixture("01-text.json");
    assert_eq!(post(&env, &body, None), 401, "missing");
    assert_eq!(
        post(&env, &body, Some(&sign("sai", &body))),
        403,
        "wrong secret"
    );
    assert_eq!(post(&env, &body, Some("sha256=zz")), 403, "not hex");
    // The same JSON with the escapes decoded, signed as Meta signed the escaped bytes: a handler
    // that re-serialised would accept English and refuse Vietnamese; we compare bytes.
    let decoded: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let reencoded = serde_json::to_vec(&decoded).unwrap();
    assert_ne!(reencoded, body);
    assert_eq!(post(&env, &reencoded, Some(&sign(SECRET, &body))), 403);
    assert_eq!(
        count(&env, "SELECT count(*) FROM inbox"),
        0,
        "nothing stored"
    );
    // The old secret still signs while it is rotated out.
    assert_eq!(post(&env, &body, Some(&sign(OLD_SECRET, &body))), 200);
    assert_eq!(count(&env, "SELECT count(*) FROM inbox"), 1);
    // What was stored is the event's own bytes, escapes and all.
    let raw: Vec<u8> = env
        .db()
        .query_row("SELECT raw FROM inbox", [], |r| r.get(0))
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    assert!(
        raw.contains(r"\u0110\u01b0\u1eddng L\u00ea L\u1ee3i"),
        "{raw}"
    );
}

#[test]
fn text_photo_and_location_in_three_posts_become_one_report() {
    let env = env("1s");
    let _d = started(&env);
    // Out of order: the location (sent last) arrives first.
    deliver(&env, "03-location.json");
    deliver(&env, "01-text.json");
    deliver(&env, "02-photo.json");
    // Facebook sends one of them again.
    deliver(&env, "01-text.json");
    assert_eq!(count(&env, "SELECT count(*) FROM inbox"), 3);
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let events = env.spool_events();
    assert_eq!(events.len(), 1, "one report");
    let r = &events[0];
    assert_eq!(r["event"], "report.created");
    assert_eq!(r["channel"]["kind"], "facebook");
    assert!(
        r["title"]
            .as_str()
            .unwrap()
            .starts_with("Đường Lê Lợi đoạn trước trường Quốc Học"),
        "{r}"
    );
    let description = r["description"].as_str().unwrap();
    assert!(
        description.ends_with("vị trí đây ạ"),
        "in the citizen's order: {description}"
    );
    assert_eq!(r["location"]["lat"], 16.4637);
    assert_eq!(r["location"]["source"], "device");
    assert_eq!(r["reporter"]["facebook_psid"], PSID);
    assert_eq!(r["reporter"]["phone"], "+84914222333");
    assert_eq!(r["external_id"], "mid:m_Xq3LrT0yV2c8Hh1kPzQe4wA7bN");
    assert!(!env.log().contains(PSID), "no PSID in logs:\n{}", env.log());
}

#[test]
fn a_batch_of_entries_keeps_messages_drops_receipts_and_records_staff_replies() {
    let env = env("1s");
    let _d = started(&env);
    deliver(&env, "04-batch.json");
    // Two messages and the echo are kept; the read and the delivery are not.
    assert_eq!(count(&env, "SELECT count(*) FROM inbox"), 3);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inbox WHERE automated = 'staff_reply'"
        ),
        1
    );
    deliver(&env, "05-echo.json");
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inbox WHERE automated = 'own_echo'"
        ),
        1
    );
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    let r = &env.spool_events()[0];
    assert!(r["description"].as_str().unwrap().contains("Cây xanh đổ"));
    // The place from the map link in the second message.
    assert_eq!(r["location"]["source"], "text");
    assert_eq!(r["location"]["lat"], 16.468);
}

#[test]
fn a_late_message_and_an_edit_update_the_report() {
    let env = env("1s");
    let _d = started(&env);
    deliver(&env, "01-text.json");
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    deliver(&env, "06-late-photo.json");
    deliver(&env, "07-edit.json");
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 2),
        "{}",
        env.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let events = env.spool_events();
    assert_eq!(events.len(), 2, "one report, one update: {events:#?}");
    let update = events
        .iter()
        .find(|e| e["event"] == "report.updated")
        .unwrap();
    let schema = super::schema::validator();
    for e in &events {
        assert_eq!(super::schema::violations(&schema, e), Vec::<String>::new());
    }
    let added = update["update"]["description"].as_str().unwrap();
    assert!(added.contains("Thêm ảnh chụp sáng nay"), "{added}");
    assert!(added.contains("gần cổng trường Quốc Học"), "{added}");
    assert_eq!(count(&env, "SELECT count(*) FROM reports"), 1);
}

#[test]
fn a_restart_mid_conversation_neither_splits_nor_doubles_the_report() {
    let env = env("3s");
    let d = started(&env);
    deliver(&env, "01-text.json");
    deliver(&env, "02-photo.json");
    signal(&d, libc::SIGKILL);
    drop(d);
    let _d = started(&env);
    deliver(&env, "03-location.json");
    // Meta re-sends what it thinks was not answered.
    deliver(&env, "02-photo.json");
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(env.spool_events().len(), 1);
    assert_eq!(count(&env, "SELECT count(*) FROM reports"), 1);
    assert_eq!(count(&env, "SELECT count(*) FROM fb_conversations"), 1);
}

#[test]
fn broken_json_is_kept_in_quarantine_and_a_huge_body_is_refused() {
    let env = env("1s");
    let _d = started(&env);
    let broken = br#"{"object":"page","entry":[{"id":"104200000000001","messaging":[{"#;
    assert_eq!(post(&env, broken, Some(&sign(SECRET, broken))), 200);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inbox WHERE status = 'quarantined'"
        ),
        1
    );
    let huge = vec![b' '; 200 * 1024];
    assert_eq!(post(&env, &huge, Some(&sign(SECRET, &huge))), 413);
    // A body for another page is refused as a whole, and kept.
    let other = String::from_utf8(fixture("01-text.json"))
        .unwrap()
        .replace("104200000000001", "999");
    assert_eq!(
        post(
            &env,
            other.as_bytes(),
            Some(&sign(SECRET, other.as_bytes()))
        ),
        200
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inbox WHERE status = 'quarantined'"
        ),
        2
    );
    assert_eq!(count(&env, "SELECT count(*) FROM reports"), 0);
}

#[test]
fn photos_are_downloaded_and_links_elsewhere_are_refused_and_recorded() {
    let cdn = super::http_stub::Stub::start();
    let jpeg = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/media/hue-exif.jpg"
    ))
    .unwrap();
    cdn.answer(
        "/v/t1.15752-9/4711_n.jpg",
        super::http_stub::Answer::ok("image/jpeg", jpeg.clone()),
    );
    // A redirect off the allowed host is refused at the hop.
    cdn.answer(
        "/v/t1.15752-9/4712_n.jpg",
        super::http_stub::Answer::redirect(&format!(
            "http://localhost:{}/v/t1.15752-9/4711_n.jpg",
            cdn.port
        )),
    );
    let env = env_with("1s", "media_hosts = [\"127.0.0.1\"]");
    let _d = started(&env);
    let cdn_base = cdn.url("");
    let photo = String::from_utf8(fixture("02-photo.json"))
        .unwrap()
        .replace("https://scontent.xx.fbcdn.net", &cdn_base);
    let body = photo.as_bytes();
    assert_eq!(post(&env, body, Some(&sign(SECRET, body))), 200);
    let more = format!(
        r#"{{"object":"page","entry":[{{"id":"104200000000001","time":1788412205000,"messaging":[{{"sender":{{"id":"{PSID}"}},"recipient":{{"id":"104200000000001"}},"timestamp":1788412204000,"message":{{"mid":"m_More","attachments":[{{"type":"image","payload":{{"url":"https://evil.example.com/x.jpg"}}}},{{"type":"file","payload":{{"url":"{cdn_base}/v/t1.15752-9/4712_n.jpg"}}}}]}}}}]}}]}}"#
    );
    assert_eq!(
        post(&env, more.as_bytes(), Some(&sign(SECRET, more.as_bytes()))),
        200
    );
    assert!(
        wait_for(Duration::from_secs(30), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    let r = &env.spool_events()[0];
    let sha = phananh::pipeline::sha256_hex(&jpeg);
    assert_eq!(r["media"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["media"][0]["sha256"], sha.as_str());
    assert_eq!(r["media"][0]["content_type"], "image/jpeg");
    assert_eq!(r["media"][0]["name"], "4711_n.jpg");
    assert!(
        env.path(&format!("state/media/{}/{sha}", &sha[..2]))
            .exists()
    );
    let omitted = r["omitted_media"].as_array().unwrap();
    assert_eq!(omitted.len(), 2, "{r}");
    assert!(omitted.iter().all(|o| o["reason"] == "not_allowed"), "{r}");
    assert_eq!(r["title"], "Phản ánh qua Facebook (không có nội dung chữ)");
    // No text, no pin: the photo's EXIF position is the report's.
    assert_eq!(r["location"]["source"], "exif", "{r}");
    assert_eq!(r["location"]["lat"], 16.4637, "{r}");
    let schema = super::schema::validator();
    assert_eq!(super::schema::violations(&schema, r), Vec::<String>::new());
    let asked: Vec<String> = cdn
        .requests()
        .into_iter()
        .map(|q| format!("{} {} {}", q.method, q.path, q.body.len()))
        .collect();
    assert!(
        asked.contains(&"GET /v/t1.15752-9/4711_n.jpg 0".to_string()),
        "{asked:?}"
    );
    // Signed CDN query strings do not reach the log.
    assert!(!env.log().contains("oh=03_AbC"), "{}", env.log());
}

/// A stand-in Graph API that knows the page and the sender, and has the app subscribed.
fn healthy(graph: &super::http_stub::Stub) {
    graph.answer(
        &format!("GET /v25.0/{PSID}"),
        super::http_stub::Answer::ok(
            "application/json",
            format!(r#"{{"name":"Nguy\u1ec5n Th\u1ecb Lan","id":"{PSID}"}}"#).into_bytes(),
        ),
    );
    graph.answer(
        "GET /v25.0/me",
        super::http_stub::Answer::ok(
            "application/json",
            br#"{"id":"104200000000001","name":"Trang"}"#.to_vec(),
        ),
    );
    graph.answer(
        "GET /v25.0/104200000000001/subscribed_apps",
        super::http_stub::Answer::ok(
            "application/json",
            br#"{"data":[{"id":"1","name":"phananh","subscribed_fields":["messages","message_echoes"]}]}"#.to_vec(),
        ),
    );
}

/// A channel that replies through a stand-in Graph API.
fn replying(graph: &super::http_stub::Stub) -> Env {
    healthy(graph);
    let env = env_full(
        "1s",
        &format!(
            "reply = true\nfetch_names = true\npage_access_token_file = \"../page.token\"\ngraph_api_base = \"{}\"\n",
            graph.url("")
        ),
        "[forward]\nbackoff_base = \"100ms\"\nbackoff_max = \"300ms\"\n",
    );
    std::fs::write(env.path("page.token"), "EAAB-token-1\n").unwrap();
    env
}

const SEND_API: &str = "/v25.0/104200000000001/messages";

fn sent_ok() -> super::http_stub::Answer {
    super::http_stub::Answer::ok(
        "application/json",
        format!(r#"{{"recipient_id":"{PSID}","message_id":"m_reply"}}"#).into_bytes(),
    )
}

fn graph_error(status: u16, code: i64, message: &str) -> super::http_stub::Answer {
    super::http_stub::Answer {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: format!(r#"{{"error":{{"message":"{message}","type":"OAuthException","code":{code},"fbtrace_id":"A1"}}}}"#).into_bytes(),
    }
}

fn ack_state(env: &Env) -> Option<String> {
    if !env.path("state/phananh.db").exists() {
        return None;
    }
    env.db()
        .query_row("SELECT state FROM acks", [], |r| r.get(0))
        .ok()
}

#[test]
fn the_citizen_gets_one_messenger_reply_with_the_tracking_code() {
    let graph = super::http_stub::Stub::start();
    graph.answer(SEND_API, sent_ok());
    let env = replying(&graph);
    let _d = started(&env);
    deliver(&env, "01-text.json");
    assert!(
        wait_for(Duration::from_secs(20), || ack_state(&env).as_deref()
            == Some("sent")),
        "{:?}\n{}",
        ack_state(&env),
        env.log()
    );
    let code: String = env
        .db()
        .query_row("SELECT tracking_code FROM reports", [], |r| r.get(0))
        .unwrap();
    let sends: Vec<_> = graph
        .requests()
        .into_iter()
        .filter(|r| r.path == SEND_API)
        .collect();
    assert_eq!(sends.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&sends[0].body).unwrap();
    assert_eq!(body["recipient"]["id"], PSID);
    assert_eq!(body["messaging_type"], "RESPONSE");
    assert!(
        body["message"]["text"]
            .as_str()
            .unwrap()
            .contains(&format!("Mã theo dõi: {code}")),
        "{body}"
    );
    assert_eq!(
        body["message"]["metadata"],
        format!("phananh:{code}").as_str()
    );
    // fetch_names: the sender's name, asked of the Graph API, is in the record (not in logs).
    let created = &env.spool_events()[0];
    assert_eq!(created["reporter"]["name"], "Nguyễn Thị Lan");
    // Our reply comes back as an echo: stored, not a report, not answered.
    let echo = String::from_utf8(fixture("05-echo.json"))
        .unwrap()
        .replace("PA-7K3M-Q2XD", &code);
    assert_eq!(
        post(&env, echo.as_bytes(), Some(&sign(SECRET, echo.as_bytes()))),
        200
    );
    // A later message adds to the report and is not answered again.
    deliver(&env, "06-late-photo.json");
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 2),
        "{}",
        env.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        graph
            .requests()
            .iter()
            .filter(|r| r.path == SEND_API)
            .count(),
        1
    );
    assert_eq!(count(&env, "SELECT count(*) FROM acks"), 1);
    assert!(
        !env.log().contains(PSID) && !env.log().contains("EAAB") && !env.log().contains("Lan"),
        "{}",
        env.log()
    );
}

#[test]
fn a_refused_token_waits_for_a_new_one_and_a_rate_limit_pauses() {
    let graph = super::http_stub::Stub::start();
    graph.answer(
        SEND_API,
        graph_error(
            400,
            190,
            "Error validating access token: Session has expired",
        ),
    );
    let env = replying(&graph);
    let _d = started(&env);
    deliver(&env, "01-text.json");
    assert!(
        wait_for(Duration::from_secs(20), || http_get(env.port, "/readyz")
            .is_some_and(
                |r| r.starts_with("HTTP/1.1 503") && r.contains("fb:ack")
            )),
        "{}",
        env.log()
    );
    assert!(
        env.log().contains("page access token was refused"),
        "{}",
        env.log()
    );
    // Intake goes on while replies wait.
    deliver(&env, "04-batch.json");
    // The operator's tooling writes a fresh token; Meta now rate-limits once, then accepts.
    std::fs::write(env.path("page.token"), "EAAB-token-2\n").unwrap();
    graph.answer(
        SEND_API,
        graph_error(400, 613, "Calls to this api have exceeded the rate limit."),
    );
    assert!(
        wait_for(Duration::from_secs(20), || env
            .log()
            .contains("exceeded the rate limit")
            || count(
                &env,
                "SELECT count(*) FROM acks WHERE last_error LIKE '%code 613%'"
            ) > 0),
        "{}",
        env.log()
    );
    graph.answer(SEND_API, sent_ok());
    assert!(
        wait_for(Duration::from_secs(30), || count(
            &env,
            "SELECT count(*) FROM acks WHERE state = 'sent'"
        ) == 2),
        "{}",
        env.log()
    );
    let (attempts, state): (i64, String) = env
        .db()
        .query_row("SELECT max(attempts), min(state) FROM acks", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        (attempts, state.as_str()),
        (1, "sent"),
        "waiting is not an attempt"
    );
    assert!(
        wait_for(Duration::from_secs(10), || http_get(env.port, "/readyz")
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))),
        "{}",
        env.log()
    );
}

#[test]
fn a_lost_subscription_is_restored_and_a_refused_token_is_shown() {
    let graph = super::http_stub::Stub::start();
    let env = replying(&graph);
    // Meta dropped the app after failed webhooks.
    graph.answer(
        "GET /v25.0/104200000000001/subscribed_apps",
        super::http_stub::Answer::ok("application/json", br#"{"data":[]}"#.to_vec()),
    );
    graph.answer(
        "POST /v25.0/104200000000001/subscribed_apps",
        super::http_stub::Answer::ok("application/json", br#"{"success":true}"#.to_vec()),
    );
    let d = started(&env);
    assert!(
        wait_for(Duration::from_secs(20), || env
            .log()
            .contains("subscribed it again")),
        "{}\n{:?}\n{:?}",
        env.log(),
        http_get(env.port, "/readyz"),
        graph.requests()
    );
    assert_eq!(readyz_state(&env, "fb:graph").as_deref(), Some("running"));
    assert!(
        graph
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.path.ends_with("/subscribed_apps")),
        "it subscribed again"
    );
    drop(d);

    // An expired token: the channel says so at once, and intake still works.
    graph.answer(
        "GET /v25.0/me",
        graph_error(
            400,
            190,
            "Error validating access token: Session has expired",
        ),
    );
    let _d = started(&env);
    assert!(
        wait_for(Duration::from_secs(20), || http_get(env.port, "/readyz")
            .is_some_and(|r| r.starts_with("HTTP/1.1 503"))
            && readyz_state(&env, "fb:graph").as_deref()
                == Some("needs_operator")),
        "{:?}\n{}",
        http_get(env.port, "/readyz"),
        env.log()
    );
    deliver(&env, "01-text.json");
    assert_eq!(count(&env, "SELECT count(*) FROM inbox"), 1);
}

/// A channel's (or `CHANNEL:ack`, `CHANNEL:graph`) state in `/readyz`.
fn readyz_state(env: &Env, key: &str) -> Option<String> {
    let r = http_get(env.port, "/readyz")?;
    let body = r.split("\r\n\r\n").nth(1)?;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["channels"][key]["state"].as_str().map(str::to_string)
}

#[test]
fn visitors_posts_become_reports_and_comments_only_when_asked() {
    let env = env_with("1s", "feed = \"posts\"");
    let _d = started(&env);
    deliver(&env, "08-feed.json");
    // The post, the comment and the page's own post are kept; the reaction is not.
    assert_eq!(count(&env, "SELECT count(*) FROM inbox"), 3);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inbox WHERE automated = 'own_post'"
        ),
        1
    );
    assert_eq!(
        count(&env, "SELECT count(*) FROM inbox WHERE automated = 'feed'"),
        1,
        "comments are not taken with feed = \"posts\""
    );
    assert!(
        wait_for(Duration::from_secs(30), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    let r = &env.spool_events()[0];
    assert_eq!(
        r["title"],
        "Rác thải ùn ứ ở chợ Đông Ba 3 ngày nay chưa ai thu gom"
    );
    assert_eq!(r["reporter"]["facebook_psid"], "8420000000000078");
    // The photo link is not among the test's media hosts: refused and listed.
    assert_eq!(r["omitted_media"][0]["reason"], "not_allowed", "{r}");

    let env = env_with("1s", "feed = \"posts+comments\"");
    let _d = started(&env);
    deliver(&env, "08-feed.json");
    assert!(
        wait_for(Duration::from_secs(30), || env.spool_events().len() == 2),
        "{}",
        env.log()
    );
    assert!(env.spool_events().iter().any(|e| {
        e["description"]
            .as_str()
            .unwrap()
            .starts_with("Cây xanh đổ")
    }));
}

/// One citizen's message, unique by `n`.
pub(super) fn message_body(n: usize) -> Vec<u8> {
    format!(
        r#"{{"object":"page","entry":[{{"id":"104200000000001","time":1788412203511,"messaging":[{{"sender":{{"id":"73100000{n:08}"}},"recipient":{{"id":"104200000000001"}},"timestamp":1788412202977,"message":{{"mid":"m_crash_{n}","text":"\u0110\u00e8n \u0111\u01b0\u1eddng s\u1ed1 {n} b\u1ecb h\u1ecfng"}}}}]}}]}}"#
    )
    .into_bytes()
}

#[test]
fn a_kill_mid_delivery_then_metas_retries_store_every_message_once() {
    const N: usize = 60;
    let env = env("1s");
    let d = started(&env);
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let posters: Vec<_> = (0..N)
        .map(|n| {
            let body = message_body(n);
            let sig = sign(SECRET, &body);
            let port = env.port;
            let answered = answered.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis((n as u64 % 12) * 5));
                let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                let _ = write!(
                    s,
                    "POST /webhooks/facebook/fb HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                if out.starts_with("HTTP/1.1 200") {
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(25));
    signal(&d, libc::SIGKILL);
    for p in posters {
        p.join().unwrap();
    }
    drop(d);
    let acked = answered.load(std::sync::atomic::Ordering::SeqCst);
    // Whatever was answered 200 must be stored.
    assert!(count(&env, "SELECT count(*) FROM inbox") as usize >= acked);
    // Meta sends again everything (it cannot tell which answers were lost).
    let _d = started(&env);
    for n in 0..N {
        let body = message_body(n);
        assert_eq!(post(&env, &body, Some(&sign(SECRET, &body))), 200);
    }
    assert!(
        wait_for(Duration::from_secs(30), || env.spool_events().len() == N),
        "{} of {N}\n{}",
        env.spool_events().len(),
        env.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(env.spool_events().len(), N);
    assert_eq!(count(&env, "SELECT count(*) FROM inbox") as usize, N);
    assert_eq!(count(&env, "SELECT count(*) FROM reports") as usize, N);
    eprintln!("answered 200 before the kill: {acked} of {N}");
}

#[test]
fn an_edit_before_its_message_and_a_lone_sticker_make_no_extra_report() {
    let env = env("1s");
    let _d = started(&env);
    // The edit overtakes its message (a retry after a 503, a batch delivered out of order).
    deliver(&env, "07-edit.json");
    deliver(&env, "01-text.json");
    // A thumbs-up on its own, from someone else.
    let like = String::from_utf8(fixture("02-photo.json"))
        .unwrap()
        .replace("7310000000000042", "7310000000000099")
        .replace(
            r#"{"type":"image","payload":{"url":"https://scontent.xx.fbcdn.net/v/t1.15752-9/4711_n.jpg?_nc_cat=1&oh=03_AbC&oe=68C1A2B3"}},"#,
            "",
        );
    assert_eq!(
        post(&env, like.as_bytes(), Some(&sign(SECRET, like.as_bytes()))),
        200
    );
    assert_eq!(
        count(&env, "SELECT count(*) FROM inbox WHERE automated = 'empty'"),
        1
    );
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let events = env.spool_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let d = events[0]["description"].as_str().unwrap();
    assert_eq!(
        d, "Đường Lê Lợi có ổ gà rất lớn, gần cổng trường Quốc Học",
        "the edit applies once"
    );
}

#[test]
fn the_same_photo_by_mail_and_recompressed_by_facebook_is_one_incident() {
    // The citizen's photo as Facebook serves it: smaller and recompressed, not the same bytes.
    let original = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/media/hue-exif.jpg"
    ))
    .unwrap();
    let img = image::load_from_memory(&original).unwrap();
    let small = img.resize(
        img.width() * 3 / 4,
        img.height() * 3 / 4,
        image::imageops::FilterType::Lanczos3,
    );
    let mut copy = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut copy, 60)
        .encode_image(&small)
        .unwrap();
    assert_ne!(copy, original);
    let cdn = super::http_stub::Stub::start();
    cdn.answer(
        "/v/t1.15752-9/4711_n.jpg",
        super::http_stub::Answer::ok("image/jpeg", copy),
    );
    let env = env_with("1s", "media_hosts = [\"127.0.0.1\"]");
    std::fs::write(
        env.path("channels/mail.toml"),
        "kind = \"maildir\"\npath = \"../Maildir\"\nscan_interval = \"1s\"\n",
    )
    .unwrap();
    let _d = started(&env);
    // First by mail, with the original photo.
    env.deliver(
        "1700000000.M1P1.mx",
        &std::fs::read(super::common::fixture("06-photo-exif-hue.eml")).unwrap(),
    );
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    let first = env.spool_events().remove(0);
    // Then by someone else on Messenger, with the recompressed copy.
    let photo = String::from_utf8(fixture("02-photo.json"))
        .unwrap()
        .replace("https://scontent.xx.fbcdn.net", &cdn.url(""));
    assert_eq!(
        post(
            &env,
            photo.as_bytes(),
            Some(&sign(SECRET, photo.as_bytes()))
        ),
        200
    );
    assert!(
        wait_for(Duration::from_secs(30), || env.spool_events().len() == 2),
        "{}",
        env.log()
    );
    let events = env.spool_events();
    let dup = events
        .iter()
        .find(|e| e["event"] == "report.duplicate")
        .expect("forwarded as a duplicate, not dropped");
    assert_eq!(dup["duplicate_of"]["tracking_code"], first["tracking_code"]);
    assert_eq!(dup["related"][0]["reason"], "same_photo");
    assert!(dup["related"][0]["score"].as_f64().unwrap() >= 0.9, "{dup}");
    assert_eq!(
        count(&env, "SELECT count(*) FROM reports"),
        2,
        "both stored"
    );
}

#[test]
fn erase_by_psid_removes_the_conversation_an_open_one_included() {
    let env = env("1s");
    let d = started(&env);
    deliver(&env, "01-text.json");
    deliver(&env, "02-photo.json");
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    // The same citizen writes again and is mid-conversation when the request comes.
    deliver(&env, "06-late-photo.json");
    drop(d);
    assert!(count(&env, "SELECT count(*) FROM fb_fragments") > 0);
    let forwarded = env.spool_events().len();

    let out = env.cli_ok(&["erase", "--phone", "0914 222 333"]);
    assert!(
        out.contains("1 reports anonymised") && out.contains("1 reporters deleted"),
        "the PSID is found through the phone: {out}"
    );
    assert_eq!(count(&env, "SELECT count(*) FROM fb_fragments"), 0);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM fb_conversations WHERE psid != '' OR state = 'open'"
        ),
        0
    );
    assert_eq!(
        count(&env, "SELECT count(*) FROM inbox WHERE length(raw) > 0"),
        0
    );
    let mut bytes = std::fs::read(env.path("state/phananh.db")).unwrap();
    bytes.extend(std::fs::read(env.path("state/phananh.db-wal")).unwrap_or_default());
    assert!(
        !bytes.windows(PSID.len()).any(|w| w == PSID.as_bytes()),
        "the PSID is still in the database file"
    );
    // Restarted, the daemon assembles nothing from what was erased.
    let _d = started(&env);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(env.spool_events().len(), forwarded, "{}", env.log());
}
