//! Acknowledgements through a real SMTP server: one per new report, in Vietnamese with the
//! tracking code, threaded under the citizen's mail; never for follow-ups, repeats, machines'
//! mail, old mail or an address that bounced; relay failures retried, refusals recorded.

use super::common::{Env, wait_for};
use super::smtp_sink::SmtpSink;
use std::time::Duration;

const ADDR: &str = "citizen.one@example.com";

pub fn ack_channel(sink: &SmtpSink, extra: &str) -> String {
    format!(
        "[ack]\nfrom = \"Trung tâm Giám sát IOC <dttm@hue.example.vn>\"\n{extra}\n\
         [ack.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout = \"5s\"\n",
        sink.port
    )
}

const FAST_RETRY: &str = "[forward]\nbackoff_base = \"200ms\"\nbackoff_max = \"500ms\"\n";

/// A citizen's mail written now (acknowledgements are only for recent mail).
pub fn mail(from: &str, id: &str, text: &str, age: chrono::Duration) -> Vec<u8> {
    let date = (chrono::Utc::now() - age).to_rfc2822();
    format!(
        "From: =?UTF-8?Q?Nguy=E1=BB=85n_V=C4=83n_M=E1=BB=99t?= <{from}>\r\nTo: dttm@hue.example.vn\r\n\
         Subject: =?UTF-8?Q?Ph=E1=BA=A3n_=C3=A1nh?=\r\nDate: {date}\r\nMessage-ID: <{id}@example.com>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n"
    )
    .into_bytes()
}

/// (the citizen's Message-ID, state, reason) per acknowledgement, oldest first.
fn acks(env: &Env) -> Vec<(String, String, Option<String>)> {
    if !env.path("state/phananh.db").exists() {
        return Vec::new();
    }
    let db = env.db();
    let mut stmt = db
        .prepare(
            "SELECT r.external_id, a.state, a.reason FROM acks a JOIN reports r ON r.id = a.report_id ORDER BY a.id",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn state(a: &[(String, String, Option<String>)], id: &str) -> (String, Option<String>) {
    let (_, s, r) = a
        .iter()
        .find(|(e, _, _)| e == &format!("<{id}@example.com>"))
        .unwrap_or_else(|| panic!("no ack for {id}: {a:?}"));
    (s.clone(), r.clone())
}

fn settled(env: &Env, n: usize) -> Vec<(String, String, Option<String>)> {
    let done = |a: &Vec<(String, String, Option<String>)>| {
        a.len() == n
            && a.iter()
                .all(|(_, s, _)| s == "sent" || s == "suppressed" || s == "dead")
    };
    assert!(
        wait_for(Duration::from_secs(20), || done(&acks(env))),
        "acks not settled: {:?}\n{}",
        acks(env),
        env.log()
    );
    acks(env)
}

fn code_of(env: &Env, external_id: &str) -> String {
    env.db()
        .query_row(
            "SELECT tracking_code FROM reports WHERE external_id = ?1",
            [external_id],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn a_new_report_is_acknowledged_once_and_follow_ups_repeats_and_machines_are_not() {
    let sinkdir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(sinkdir.path());
    let env = Env::new("", &ack_channel(&sink, ""));
    let d = env.start();

    env.deliver(
        "1",
        &mail(
            ADDR,
            "r1",
            "Nước ngập sâu 40cm trên đường Lê Lợi.",
            chrono::Duration::zero(),
        ),
    );
    let got = sink.wait_for(1, || env.log());
    let code = code_of(&env, "<r1@example.com>");
    let ack = &got[0];
    assert_eq!(ack.rcpt, ADDR);
    assert!(
        ack.subject().starts_with(&format!("[{code}] Đã tiếp nhận")),
        "{}",
        ack.subject()
    );
    assert_eq!(
        ack.header("Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    assert_eq!(
        ack.header("X-Auto-Response-Suppress").as_deref(),
        Some("All")
    );
    assert_eq!(ack.header("X-Phananh-Loop").as_deref(), Some("mail"));
    assert_eq!(
        ack.header("In-Reply-To").as_deref(),
        Some("<r1@example.com>")
    );
    let our_id = ack.header("Message-ID").unwrap();
    assert!(
        our_id.starts_with(&format!("<{code}.")) && our_id.ends_with("@hue.example.vn>"),
        "{our_id}"
    );
    let body = ack.body();
    assert!(body.contains(&format!("Mã theo dõi: {code}")), "{body}");
    assert!(body.contains("Kính gửi Nguyễn Văn Một"), "{body}");

    // The citizen answers the acknowledgement: a follow-up, not a new report, not answered.
    let reply = format!(
        "From: {ADDR}\r\nTo: dttm@hue.example.vn\r\nSubject: Re: [{code}] ok\r\nDate: {}\r\n\
         Message-ID: <r1-reply@example.com>\r\nIn-Reply-To: {our_id}\r\nReferences: <r1@example.com> {our_id}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nNước vẫn chưa rút.\r\n",
        chrono::Utc::now().to_rfc2822()
    );
    env.deliver("2", reply.as_bytes());
    // The same mail again (a resend with its Message-ID) and again in new words, another Message-ID,
    // the same text: a repeat by the same reporter is recorded, not answered again.
    env.deliver(
        "3",
        &mail(
            ADDR,
            "r1",
            "Nước ngập sâu 40cm trên đường Lê Lợi.",
            chrono::Duration::zero(),
        ),
    );
    env.deliver(
        "4",
        &mail(
            ADDR,
            "r1-again",
            "Nước ngập sâu 40cm trên đường Lê Lợi.",
            chrono::Duration::zero(),
        ),
    );
    // Machines' mail: an auto-reply, a bounce, a list message.
    for f in ["13-auto-reply.eml", "14-bounce.eml", "15-mailing-list.eml"] {
        env.deliver(f, &std::fs::read(super::common::fixture(f)).unwrap());
    }
    assert!(
        wait_for(Duration::from_secs(20), || env
            .count(&env.maildir().join("new"), "")
            == 0),
        "{}",
        env.log()
    );
    let a = settled(&env, 2);
    assert_eq!(state(&a, "r1"), ("sent".into(), None));
    assert_eq!(
        state(&a, "r1-again"),
        ("suppressed".into(), Some("duplicate".into()))
    );
    let automated: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM inbox WHERE automated IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(automated, 3);
    let updates: i64 = env
        .db()
        .query_row("SELECT count(*) FROM updates", [], |r| r.get(0))
        .unwrap();
    assert_eq!(updates, 1, "the reply joined the report");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sink.messages().len(), 1, "one acknowledgement, ever");
    let log = env.log();
    assert!(!log.contains(ADDR) && !log.contains("Nguyễn"), "{log}");
    // With nothing owed, the sender waits quietly.
    super::common::assert_idles(d.id(), || env.log());
}

#[test]
fn a_bounced_address_old_mail_and_a_flood_are_not_answered() {
    let sinkdir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(sinkdir.path());
    let env = Env::new("", &ack_channel(&sink, "per_address_per_hour = 2"));
    let _d = env.start();

    let gone = "gone@example.com";
    env.deliver(
        "1",
        &mail(
            gone,
            "b1",
            "Cây đổ chắn ngang đường Hùng Vương.",
            chrono::Duration::zero(),
        ),
    );
    let got = sink.wait_for(1, || env.log());
    let our_id = got[0].header("Message-ID").unwrap();
    let bounce = std::fs::read_to_string(super::common::fixture("14-bounce.eml"))
        .unwrap()
        .replace("<PA-2H6J-W8ZB.20261126081500@hue.example.vn>", &our_id)
        .replace(
            "<20261126011509.4F2A1C0123@mx.hue.example.vn>",
            "<bounce-b1@mx.example.com>",
        );
    env.deliver("2", bounce.as_bytes());
    assert!(
        wait_for(Duration::from_secs(20), || env
            .db()
            .query_row("SELECT count(*) FROM mail_suppressions", [], |r| r
                .get::<_, i64>(0))
            .unwrap()
            == 1),
        "{}",
        env.log()
    );
    env.deliver(
        "3",
        &mail(
            gone,
            "b2",
            "Đèn giao thông ngã tư Lý Thường Kiệt bị tắt.",
            chrono::Duration::zero(),
        ),
    );
    // Written four days ago (a backlog, a slow relay): too old to answer.
    env.deliver(
        "4",
        &mail(
            "late@example.com",
            "old",
            "Rác thải đổ trộm ở bờ sông Hương.",
            chrono::Duration::days(4),
        ),
    );
    // Three reports from one address in an hour, limit two: the third is not answered.
    for i in 0..3 {
        env.deliver(
            &format!("f{i}"),
            &mail(
                "busy@example.com",
                &format!("f{i}"),
                &format!("Ổ gà số {i} trên đường Trần Hưng Đạo."),
                chrono::Duration::zero(),
            ),
        );
    }
    let a = settled(&env, 6);
    let suppressed = |r: &str| ("suppressed".to_string(), Some(r.to_string()));
    assert_eq!(state(&a, "b1"), ("sent".into(), None));
    assert_eq!(state(&a, "b2"), suppressed("bounced"));
    assert_eq!(state(&a, "old"), suppressed("too_old"));
    let flood: Vec<_> = (0..3).map(|i| state(&a, &format!("f{i}"))).collect();
    assert_eq!(
        flood.iter().filter(|r| r.0 == "sent").count(),
        2,
        "{flood:?}"
    );
    assert!(flood.contains(&suppressed("rate_limited")), "{flood:?}");
    std::thread::sleep(Duration::from_millis(500));
    let rcpts: Vec<String> = sink.messages().into_iter().map(|m| m.rcpt).collect();
    assert_eq!(
        rcpts,
        vec![gone, "busy@example.com", "busy@example.com"],
        "{}",
        env.log()
    );
}

#[test]
fn a_relay_that_is_down_or_busy_is_retried_and_a_refusal_is_recorded() {
    let sinkdir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::down(sinkdir.path());
    // One per address per hour: retries must not count against it.
    let env = Env::new(FAST_RETRY, &ack_channel(&sink, "per_address_per_hour = 1"));
    let _d = env.start();

    env.deliver(
        "1",
        &mail(
            "waiting@example.com",
            "d1",
            "Cống thoát nước bị tắc ở phường Vĩnh Ninh.",
            chrono::Duration::zero(),
        ),
    );
    assert!(
        wait_for(Duration::from_secs(20), || acks(&env)
            .first()
            .is_some_and(|a| a.1 == "retrying")),
        "{:?}\n{}",
        acks(&env),
        env.log()
    );
    let error: String = env
        .db()
        .query_row("SELECT last_error FROM acks", [], |r| r.get(0))
        .unwrap();
    assert!(!error.is_empty());

    sink.resume();
    env.deliver(
        "2",
        &mail(
            "tempfail-x@example.com",
            "d2",
            "Vỉa hè bị lấn chiếm trước chợ Đông Ba.",
            chrono::Duration::zero(),
        ),
    );
    env.deliver(
        "3",
        &mail(
            "reject-y@example.com",
            "d3",
            "Xe rác chưa đến thu gom hai ngày.",
            chrono::Duration::zero(),
        ),
    );
    let a = settled(&env, 3);
    assert_eq!(state(&a, "d1").0, "sent", "{a:?}");
    assert_eq!(state(&a, "d2").0, "sent", "a 451 is tried again: {a:?}");
    assert_eq!(state(&a, "d3").0, "dead", "a 550 is not tried again: {a:?}");
    let (attempts, error): (i64, String) = env
        .db()
        .query_row(
            "SELECT attempts, last_error FROM acks WHERE state = 'dead'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(attempts, 1);
    assert!(error.contains("550"), "{error}");
    let tempfail_attempts: i64 = env
        .db()
        .query_row(
            "SELECT a.attempts FROM acks a JOIN reports r ON r.id = a.report_id
             WHERE r.external_id = '<d2@example.com>'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tempfail_attempts, 2);
    std::thread::sleep(Duration::from_millis(500));
    let rcpts: Vec<String> = sink.messages().into_iter().map(|m| m.rcpt).collect();
    assert_eq!(rcpts.len(), 2, "each once: {rcpts:?}");

    // The operator sees what was not sent, and why, without anyone's address.
    let list = env.cli_ok(&["acks", "list"]);
    let dead_code = code_of(&env, "<d3@example.com>");
    assert!(list.contains("mail: 1 dead"), "{list}");
    assert!(list.contains("mail: 2 sent"), "{list}");
    assert!(list.contains(&dead_code) && list.contains("550"), "{list}");
    assert!(!list.contains("reject-y"), "{list}");
    let log = env.log();
    assert!(
        !log.contains("reject-y") && !log.contains("tempfail-x") && !log.contains("waiting@"),
        "{log}"
    );
    // ... and can send it again (here the relay refuses it again).
    let out = env.cli_ok(&["acks", "retry"]);
    assert!(out.starts_with("1 acknowledgements due again"), "{out}");
    assert!(
        wait_for(Duration::from_secs(40), || env
            .log()
            .matches("Acknowledgement given up")
            .count()
            == 2),
        "{}",
        env.log()
    );
}
