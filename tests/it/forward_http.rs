//! Forwarding to an HTTP receiver on 127.0.0.1: signed, keyed by event id, retried through a
//! failing hour, rejected events dead until requeued, an update never before its report.

use super::common::{Env, message, wait_for};
use super::followup::reply;
use super::http_stub::{Answer, Stub};
use std::time::Duration;

const SECRET: &str = "hook-secret-for-tests";

fn hook_env(stub: &Stub, extra: &str) -> Env {
    let env = Env::new(
        &format!(
            "{extra}\n[sinks.hook]\nkind = \"http\"\nurl = \"{}\"\nsecret_file = \"secrets/hook\"\n\
             timeout = \"2s\"\n",
            stub.url("/hook")
        ),
        "",
    );
    std::fs::create_dir_all(env.path("secrets")).unwrap();
    std::fs::write(env.path("secrets/hook"), format!("{SECRET}\n")).unwrap();
    env
}

fn state_count(env: &Env, state: &str) -> i64 {
    super::forward_amqp::outbox(env, "hook", state)
}

fn write(env: &Env, name: &str, bytes: &[u8]) -> String {
    let p = env.path(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn a_receiver_failing_for_a_while_then_recovering_gets_every_event_signed() {
    let stub = Stub::start();
    let mut answers = vec![Answer::status(500); 12];
    answers.push(Answer::status(200));
    stub.sequence("/hook", answers);
    let env = hook_env(
        &stub,
        "[forward]\nbackoff_base = \"20ms\"\nbackoff_max = \"100ms\"",
    );
    let _daemon = env.start();
    for n in 0..5 {
        env.deliver(&format!("m{n}"), &message(n));
    }
    assert!(
        wait_for(Duration::from_secs(30), || state_count(&env, "delivered")
            == 5),
        "{}",
        env.log()
    );
    let requests = stub.requests();
    assert!(requests.len() >= 12 + 5, "{}", requests.len());
    let mut delivered = std::collections::BTreeSet::new();
    for r in &requests {
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.header("idempotency-key"), body["event_id"].as_str());
        assert_eq!(r.header("x-phananh-event"), body["event"].as_str());
        assert_eq!(
            r.header("x-phananh-signature").unwrap(),
            phananh::forward::sign(SECRET, &r.body),
            "the signature is HMAC-SHA256 of the exact body"
        );
        if r.status == 200 {
            delivered.insert(body["event_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(delivered.len(), 5);
    let list = env.cli_ok(&["outbox", "list", "--all", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    assert!(rows.iter().all(|r| r["state"] == "delivered"), "{list}");
    assert!(
        rows.iter().any(|r| r["attempts"].as_i64().unwrap() > 1),
        "the 500s were attempts: {list}"
    );
}

#[test]
fn a_rejected_event_is_dead_at_once_and_requeue_sends_it_again() {
    let stub = Stub::start();
    stub.answer("/hook", Answer::status(400));
    let env = hook_env(&stub, "");
    let code = env.ingest_fixture("01-utf8-nfc.eml");
    assert_eq!(state_count(&env, "dead"), 1, "a 400 is permanent");
    let list = env.cli_ok(&["outbox", "list", "--state", "dead"]);
    assert!(
        list.contains("hook: 1 dead") && list.contains("receiver answered 400"),
        "{list}"
    );
    let id: String = env
        .db()
        .query_row("SELECT id FROM outbox WHERE sink = 'hook'", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
        .to_string();
    let show = env.cli_ok(&["outbox", "show", &id]);
    assert!(
        show.contains("dead, 1 attempts") && show.contains(&code),
        "{show}"
    );

    stub.answer("/hook", Answer::status(204));
    let out = env.cli_ok(&["outbox", "requeue", &id]);
    assert!(out.contains("1 events queued again"), "{out}");
    let out = env.cli_ok(&[
        "ingest",
        "--channel",
        "mail",
        &write(&env, "m.eml", &message(1)),
    ]);
    assert!(out.contains("Forwarded 2 events to sink hook."), "{out}");
    assert_eq!(state_count(&env, "delivered"), 2);
    let keys: Vec<String> = stub
        .requests()
        .iter()
        .filter_map(|r| r.header("idempotency-key").map(str::to_string))
        .collect();
    assert_eq!(keys.len(), 3);
    assert_eq!(
        keys.iter().filter(|k| **k == keys[0]).count(),
        2,
        "the dead event again, under the same key: {keys:?}"
    );

    // A requeue without naming rows is refused rather than re-sending everything.
    let out = env.cli(&["outbox", "requeue"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("name the rows"));
}

#[test]
fn a_429_waits_as_long_as_retry_after_says() {
    let stub = Stub::start();
    stub.answer(
        "/hook",
        Answer {
            status: 429,
            headers: vec![("Retry-After".into(), "120".into())],
            body: Vec::new(),
        },
    );
    let env = hook_env(&stub, "");
    let before = chrono::Utc::now().timestamp_millis();
    env.ingest_fixture("01-utf8-nfc.eml");
    let next: i64 = env
        .db()
        .query_row(
            "SELECT next_attempt_ms FROM outbox WHERE sink = 'hook' AND state = 'retrying'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let wait = next - before;
    // Retry-After 120 s, counted from the answer (the CLI's own run time is the slack).
    assert!((119_000..=150_000).contains(&wait), "waits {wait} ms");
}

#[test]
fn an_update_is_never_delivered_before_its_report_under_concurrency() {
    let stub = Stub::start();
    // Every third answer fails, for a while: reports and updates retry in every order possible.
    let mut answers: Vec<Answer> = (0..60)
        .map(|i| Answer::status(if i % 3 == 0 { 503 } else { 200 }))
        .collect();
    answers.push(Answer::status(200));
    stub.sequence("/hook", answers);
    let env = hook_env(
        &stub,
        "[forward]\nbackoff_base = \"10ms\"\nbackoff_max = \"50ms\"\nmax_attempts = 100",
    );
    let mut originals = Vec::new();
    for n in 0..8 {
        originals.push(write(&env, &format!("o{n}.eml"), &message(n)));
    }
    let mut args = vec!["ingest", "--no-forward", "--channel", "mail"];
    args.extend(originals.iter().map(String::as_str));
    let out = env.cli_ok(&args);
    let codes: Vec<&str> = out
        .split_whitespace()
        .filter(|w| w.starts_with("PA-"))
        .collect();
    assert_eq!(codes.len(), 8, "{out}");
    let mut replies = Vec::new();
    for (n, code) in codes.iter().enumerate() {
        for k in 0..2 {
            let mail = reply(
                &format!("citizen{n}@example.com"),
                code,
                // Unique lengths: the helper's Message-ID is made from them.
                &format!("Bổ sung lần {k}: vẫn chưa sửa{}.", "!".repeat(2 * n + k)),
                false,
            );
            replies.push(write(&env, &format!("r{n}-{k}.eml"), &mail));
        }
    }
    for r in &replies {
        env.cli_ok(&["ingest", "--no-forward", "--channel", "mail", r]);
    }
    let total: i64 = env
        .db()
        .query_row("SELECT count(*) FROM outbox WHERE sink = 'hook'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(total, 8 * 3, "a report and two updates each");

    let _daemon = env.start();
    assert!(
        wait_for(Duration::from_secs(60), || state_count(&env, "delivered")
            == total),
        "{}",
        env.log()
    );
    // The order each report's events were written in.
    let db = env.db();
    let mut st = db
        .prepare("SELECT report_id, event_id FROM outbox WHERE sink = 'hook' ORDER BY id")
        .unwrap();
    let mut written: std::collections::HashMap<String, Vec<String>> = Default::default();
    for row in st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
    {
        let (report, event) = row.unwrap();
        written.entry(report).or_default().push(event);
    }
    // Nothing of a report is even attempted while an earlier event of it is undelivered.
    let mut delivered = std::collections::HashSet::new();
    for r in stub.requests() {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let event = body["event_id"].as_str().unwrap().to_string();
        let order = &written[body["id"].as_str().unwrap()];
        let at = order.iter().position(|e| *e == event).unwrap();
        for earlier in &order[..at] {
            assert!(
                delivered.contains(earlier),
                "{event} was sent before {earlier} was delivered"
            );
        }
        if r.status == 200 {
            delivered.insert(event);
        }
    }
    assert_eq!(delivered.len() as i64, total);
}

#[test]
fn an_agency_without_a_system_gets_a_readable_mail_with_a_clean_photo() {
    use super::smtp_sink::SmtpSink;
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = SmtpSink::start(relay_dir.path());
    let smtp = format!(
        "host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout = \"5s\"\n",
        relay.port
    );
    let env = Env::new(
        &format!(
            "default_category = \"khac\"\n\
             [[categories]]\ncode = \"khac\"\nname = \"Khác\"\nunit = \"ubnd_thuan_hoa\"\n\n\
             [[categories]]\ncode = \"y_te\"\nname = \"Y tế\"\nunit = \"so_y_te\"\n\n\
             [sinks.ubnd]\nkind = \"email\"\nfrom = \"Trung tâm IOC <phananh@hue.example.vn>\"\n\
             unit_addresses = {{ ubnd_thuan_hoa = \"vanthu@thuanhoa.example.vn\" }}\ncontact = \"masked\"\n\
             [sinks.ubnd.smtp]\n{smtp}\n\
             [sinks.other]\nkind = \"email\"\nfrom = \"phananh@hue.example.vn\"\n\
             unit_addresses = {{ so_y_te = \"vanthu@syt.example.vn\" }}\n\
             [sinks.other.smtp]\n{smtp}\n"
        ),
        "",
    );
    let code = env.ingest_fixture("06-photo-exif-hue.eml");
    let got = relay.wait_for(1, || env.log());
    assert_eq!(got.len(), 1, "the other unit's sink gets nothing");
    let mail = &got[0];
    assert_eq!(mail.rcpt, "vanthu@thuanhoa.example.vn");
    assert!(
        mail.subject()
            .starts_with(&format!("[{code}] Phản ánh mới: ")),
        "{}",
        mail.subject()
    );
    let body = mail.body();
    assert!(body.contains(&format!("Mã phản ánh: {code}")), "{body}");
    assert!(body.contains("openstreetmap.org/?mlat=16.4"), "{body}");
    assert!(!body.contains("huy.dang@example.com"), "masked: {body}");
    assert_eq!(
        mail.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(mail.raw.as_bytes())
        .unwrap();
    let photo = parsed.attachment(0).expect("the photo is attached");
    let bytes = photo.contents();
    assert!(bytes.starts_with(&[0xFF, 0xD8]), "a JPEG");
    assert!(
        !bytes.windows(4).any(|w| w == b"Exif"),
        "the photo's EXIF (GPS, device) stays at the centre"
    );
    let rows: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM outbox WHERE sink = 'other'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        rows, 0,
        "routed by unit: no row for a sink without the unit's address"
    );
}

#[test]
fn a_hanging_receiver_costs_one_timeout_per_round_and_everything_goes_through_after() {
    let stub = Stub::start();
    stub.answer("/hook", Answer::status(200));
    stub.hang("/hook", Duration::from_secs(5));
    let env = Env::new(
        &format!(
            "[forward]\nbackoff_base = \"200ms\"\nbackoff_max = \"400ms\"\n\
             [sinks.hook]\nkind = \"http\"\nurl = \"{}\"\ntimeout = \"1s\"\nwindow = 2\n",
            stub.url("/hook")
        ),
        "",
    );
    let mut files = Vec::new();
    for n in 0..10 {
        files.push(write(&env, &format!("m{n}.eml"), &message(n)));
    }
    let mut args = vec!["ingest", "--channel", "mail"];
    args.extend(files.iter().map(String::as_str));
    let started = std::time::Instant::now();
    let out = env.cli_ok(&args);
    assert!(out.contains("Forwarded 0 events to sink hook."), "{out}");
    assert!(out.contains("receiver: timed out"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "ten events did not each wait for their own timeout: {:?}",
        started.elapsed()
    );
    // Only the first window was tried: the rest were never sent to a receiver that hangs.
    assert_eq!(state_count(&env, "retrying"), 2);
    assert_eq!(state_count(&env, "pending"), 8);

    stub.hang("/hook", Duration::ZERO);
    let _daemon = env.start();
    assert!(
        wait_for(Duration::from_secs(30), || state_count(&env, "delivered")
            == 10),
        "{}",
        env.log()
    );
}

#[test]
fn a_reload_adds_and_removes_sinks_while_mail_flows_and_a_bad_one_changes_nothing() {
    let env = Env::new("", "");
    let daemon = env.start();
    for n in 0..5 {
        env.deliver(&format!("a{n}"), &message(n));
    }
    assert!(wait_for(Duration::from_secs(20), || env
        .spool_events()
        .len()
        == 5));
    let base = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!(
            "{base}\n[sinks.spool]\nkind = \"spool\"\ndir = \"spool\"\n\
             [sinks.copy]\nkind = \"spool\"\ndir = \"copy\"\ncontact = \"none\"\n"
        ),
    )
    .unwrap();
    super::common::signal(&daemon, libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || env
            .log()
            .contains("Sinks reloaded.")),
        "{}",
        env.log()
    );
    for n in 5..10 {
        env.deliver(&format!("a{n}"), &message(n));
    }
    let copy = env.path("state/copy");
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 10
            && env.count(&copy, ".json") == 5),
        "{}",
        env.log()
    );

    // A sink file with a mistake: refused, the running sinks go on.
    std::fs::write(
        &env.config,
        format!("{base}\n[sinks.spool]\nkind = \"spool\"\ndir = \"spool\"\n[sinks.ops]\nkind = \"amqp\"\n"),
    )
    .unwrap();
    super::common::signal(&daemon, libc::SIGHUP);
    assert!(wait_for(Duration::from_secs(10), || env
        .log()
        .contains("Reload refused")));
    env.deliver("a10", &message(10));
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 11
            && env.count(&copy, ".json") == 6),
        "{}",
        env.log()
    );

    // Removing `copy`: new events go to the spool only.
    std::fs::write(
        &env.config,
        format!("{base}\n[sinks.spool]\nkind = \"spool\"\ndir = \"spool\"\n"),
    )
    .unwrap();
    super::common::signal(&daemon, libc::SIGHUP);
    assert!(wait_for(Duration::from_secs(10), || env
        .log()
        .matches("Sinks reloaded.")
        .count()
        == 2));
    env.deliver("a11", &message(11));
    assert!(wait_for(Duration::from_secs(20), || env
        .spool_events()
        .len()
        == 12));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.count(&copy, ".json"), 6);
}

#[test]
fn a_healthy_receiver_gets_every_event_exactly_once_while_batches_overlap() {
    // Small batches: while one batch's outcomes are committed the next is read and sent, and a
    // row whose outcome is not committed yet must not be read as due again.
    let stub = Stub::start();
    stub.answer("/hook", Answer::status(200));
    let env = hook_env(&stub, "[forward]\nbatch = 3");
    let files: Vec<String> = (0..40)
        .map(|n| write(&env, &format!("m{n}.eml"), &message(n)))
        .collect();
    let mut args = vec!["ingest", "--no-forward", "--channel", "mail"];
    args.extend(files.iter().map(String::as_str));
    env.cli_ok(&args);
    let _daemon = env.start();
    assert!(
        wait_for(Duration::from_secs(30), || state_count(&env, "delivered")
            == 40),
        "{}",
        env.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for r in stub.requests() {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        *seen
            .entry(body["event_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 40);
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "sent more than once: {repeated:?}");
}
