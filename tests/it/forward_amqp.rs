//! Forwarding to a real RabbitMQ: every event consumed once after dropping repeats by message_id,
//! through a broker restart and a kill -9 of phananh; masked contact; routing by event type.

use super::common::{Env, all_fixtures, http_get, message, signal, wait_for};
use super::rabbit::{self, Consumer, RestartGuard, distinct};
use std::time::Duration;

/// `[sinks.ops]` to RabbitMQ with its own queue (and dead-letter queue), the URL in a file that
/// `with_url` writes.
fn amqp_sink(queue: &str, extra: &str) -> String {
    format!(
        "[sinks.ops]\nkind = \"amqp\"\nurl_file = \"secrets/amqp-url\"\nexchange = \"{queue}.x\"\n\
         declare = true\nqueue = \"{queue}\"\nbinding_key = \"report.#\"\n\
         dead_letter_exchange = \"{queue}.dlx\"\n{extra}\n"
    )
}

fn with_url(env: Env) -> Env {
    std::fs::create_dir_all(env.path("secrets")).unwrap();
    std::fs::write(
        env.path("secrets/amqp-url"),
        format!("{}\n", rabbit::URL_WITH_LOGIN),
    )
    .unwrap();
    env
}

/// Rows of a sink in a state; 0 while the daemon has not created the database yet.
pub(super) fn outbox(env: &Env, sink: &str, state: &str) -> i64 {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        env.path("state/phananh.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return 0;
    };
    db.query_row(
        "SELECT count(*) FROM outbox WHERE sink = ?1 AND state = ?2",
        [sink, state],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

fn event_ids(env: &Env, sink: &str) -> Vec<String> {
    let db = env.db();
    let mut st = db
        .prepare("SELECT event_id FROM outbox WHERE sink = ?1 ORDER BY id")
        .unwrap();
    st.query_map([sink], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn every_event_reaches_the_queue_once_persistent_routed_and_masked() {
    let _shared = rabbit::lock();
    let queue = rabbit::unique("phananh-it-all");
    let sinks = amqp_sink(&queue, "contact = \"masked\"");
    let env = Env::new(
        &format!(
            "{sinks}\n[sinks.spool]\nkind = \"spool\"\ndir = \"spool\"\n\n\
             [sinks.dupes]\nkind = \"spool\"\ndir = \"dupes\"\nevents = [\"report.duplicate\"]\n"
        ),
        "",
    );
    let env = with_url(env);
    let consumer = Consumer::connect();

    let files: Vec<String> = all_fixtures()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["ingest", "--channel", "mail"];
    args.extend(files.iter().map(String::as_str));
    let out = env.cli_ok(&args);
    let ids = event_ids(&env, "ops");
    assert!(ids.len() >= 10, "{out}");
    assert!(
        out.contains(&format!("Forwarded {} events to sink ops.", ids.len())),
        "{out}"
    );
    assert_eq!(outbox(&env, "ops", "delivered"), ids.len() as i64);

    let got = consumer.drain_until(&queue, ids.len(), Duration::from_secs(10));
    let once = distinct(&got);
    assert_eq!(once.len(), ids.len(), "every event, each under its own id");
    let mut want = ids.clone();
    want.sort();
    let mut seen: Vec<String> = once.keys().cloned().collect();
    seen.sort();
    assert_eq!(seen, want);

    let full: Vec<serde_json::Value> = env.spool_events();
    assert_eq!(full.len(), ids.len());
    for m in once.values() {
        assert!(m.persistent, "{m:?}");
        assert_eq!(m.content_type, "application/json");
        assert_eq!(m.kind, m.body["event"].as_str().unwrap());
        assert_eq!(m.message_id, m.body["event_id"].as_str().unwrap());
        let unit = m.body["unit"].as_str().unwrap_or("none");
        assert_eq!(
            m.routing_key,
            format!(
                "report.{}.{}",
                m.body["category"]["code"].as_str().unwrap(),
                unit
            )
        );
        // The masked sink never sees a reporter's address or number as the spool (full) has it.
        let stored = full
            .iter()
            .find(|e| e["event_id"] == m.body["event_id"])
            .unwrap();
        for field in ["email", "phone", "name"] {
            if let Some(v) = stored["reporter"][field].as_str() {
                let text = m.body.to_string();
                assert!(!text.contains(v), "{field} {v} reached a masked sink");
            }
        }
    }
    assert!(
        full.iter().any(|e| e["reporter"]["email"].is_string()),
        "the fixtures have reporters to mask"
    );

    // Routing by event type: the `dupes` sink got the duplicates only.
    let dupes = env.count(&env.path("state/dupes"), ".json");
    let dup_events = once
        .values()
        .filter(|m| m.kind == "report.duplicate")
        .count();
    assert_eq!(dupes, dup_events);

    // The same mail again: stored before, nothing new is published.
    env.cli_ok(&args);
    assert_eq!(event_ids(&env, "ops").len(), ids.len());
    assert!(consumer.drain(&queue).is_empty());
    consumer.delete(&[&queue, &format!("{queue}.dead")]);
}

#[test]
fn an_event_no_queue_takes_is_dead_and_requeue_sends_it_once_bound() {
    let _shared = rabbit::lock();
    let queue = rabbit::unique("phananh-it-unroutable");
    // Bound only for report.created.xyz: the fixture's key (report.CATEGORY.UNIT) finds no queue.
    let sinks = amqp_sink(&queue, "").replace("report.#", "nothing.#");
    let env = Env::new(&sinks, "");
    let env = with_url(env);
    let consumer = Consumer::connect();
    env.ingest_fixture("01-utf8-nfc.eml");
    assert_eq!(outbox(&env, "ops", "dead"), 1, "unroutable is permanent");
    let list = env.cli_ok(&["outbox", "list", "--sink", "ops", "--state", "dead"]);
    assert!(list.contains("unroutable"), "{list}");

    // The operator binds the queue and sends the dead event again.
    let fixed = sinks.replace("nothing.#", "report.#");
    let config = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace(&sinks, &fixed);
    std::fs::write(&env.config, config).unwrap();
    let out = env.cli_ok(&["outbox", "requeue", "--sink", "ops", "--state", "dead"]);
    assert!(out.contains("1 events queued again"), "{out}");
    env.ingest_fixture("02-nfd.eml");
    assert_eq!(outbox(&env, "ops", "delivered"), 2);
    let got = distinct(&consumer.drain_until(&queue, 2, Duration::from_secs(10)));
    assert_eq!(got.len(), 2);
    consumer.delete(&[&queue, &format!("{queue}.dead")]);
}

/// The same fallen tree, told the same way by citizen `n`.
fn fallen_tree(n: usize) -> Vec<u8> {
    format!(
        "From: <tree{n}@example.com>\r\nTo: dttm@hue.example.vn\r\nSubject: =?UTF-8?Q?C=C3=A2y_=C4=91=E1=BB=95?=\r\n\
         Date: Fri, 27 Nov 2026 08:00:00 +0700\r\nMessage-ID: <tree-{n}@mail.example.com>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         Cây đổ chắn ngang đường Lê Lợi đoạn trước trường Quốc Học, xe không đi qua được.\r\n"
    )
    .into_bytes()
}

#[test]
fn in_one_window_only_the_unroutable_events_are_dead_and_the_rest_delivered() {
    let _shared = rabbit::lock();
    let queue = rabbit::unique("phananh-it-mixed");
    // Only report.created reaches the queue; a report.duplicate comes back unroutable, inside the
    // same window as the created ones (the broker acks several at once).
    let sinks =
        amqp_sink(&queue, "routing_key = \"report.{event}\"").replace("report.#", "report.created");
    let env = with_url(Env::new(&sinks, ""));
    let consumer = Consumer::connect();
    // Distinct reports alternate with other people's reports of one fallen tree (duplicates).
    let mut files = Vec::new();
    for n in 0..120 {
        let (name, mail) = if n % 2 == 0 {
            (format!("r{n}.eml"), message(n))
        } else {
            (format!("t{n}.eml"), fallen_tree(n))
        };
        let p = env.path(&name);
        std::fs::write(&p, mail).unwrap();
        files.push(p.to_string_lossy().into_owned());
    }
    let mut args = vec!["ingest", "--channel", "mail"];
    args.extend(files.iter().map(String::as_str));
    env.cli_ok(&args);
    let by_state = |event: &str, state: &str| -> i64 {
        env.db()
            .query_row(
                "SELECT count(*) FROM outbox WHERE sink = 'ops' AND event_type = ?1 AND state = ?2",
                [event, state],
                |r| r.get(0),
            )
            .unwrap()
    };
    let created = by_state("report.created", "delivered");
    let dupes = by_state("report.duplicate", "dead");
    assert!(
        created >= 5 && dupes >= 1,
        "created {created}, duplicates {dupes}"
    );
    assert_eq!(
        by_state("report.created", "dead"),
        0,
        "a routed event is never dead"
    );
    assert_eq!(
        by_state("report.duplicate", "delivered"),
        0,
        "an unroutable one is never delivered"
    );
    let got = distinct(&consumer.drain_until(&queue, created as usize, Duration::from_secs(10)));
    assert_eq!(got.len() as i64, created);
    assert!(got.values().all(|m| m.kind == "report.created"));
    consumer.delete(&[&queue, &format!("{queue}.dead")]);
}

#[test]
fn a_missing_exchange_waits_for_the_operator_instead_of_burning_attempts() {
    let _shared = rabbit::lock();
    let exchange = rabbit::unique("phananh-it-noexchange");
    let env = with_url(Env::new(
        &format!(
            "[forward]\nmax_attempts = 2\n[sinks.ops]\nkind = \"amqp\"\nurl_file = \"secrets/amqp-url\"\nexchange = \"{exchange}\"\n"
        ),
        "",
    ));
    let out = env.cli_ok(&[
        "ingest",
        "--channel",
        "mail",
        super::common::fixture("01-utf8-nfc.eml").to_str().unwrap(),
    ]);
    assert!(
        out.contains("cannot be used") && out.contains("NOT_FOUND"),
        "{out}"
    );
    env.cli_ok(&[
        "ingest",
        "--channel",
        "mail",
        super::common::fixture("02-nfd.eml").to_str().unwrap(),
    ]);
    assert_eq!(outbox(&env, "ops", "dead"), 0);
    assert_eq!(
        outbox(&env, "ops", "pending"),
        2,
        "untouched, attempts not counted"
    );
}

#[test]
fn a_broker_restart_mid_stream_loses_nothing_and_health_shows_it() {
    let _exclusive = rabbit::lock();
    let queue = rabbit::unique("phananh-it-restart");
    // 10 events a second: the broker stops while the stream is being published.
    let sinks = amqp_sink(&queue, "rate_per_second = 10");
    let env = Env::new(
        &format!("[forward]\nbackoff_base = \"100ms\"\nbackoff_max = \"1s\"\n\n{sinks}"),
        "",
    );
    let env = with_url(env);
    let _daemon = env.start();
    for n in 0..30 {
        env.deliver(&format!("m{n}"), &message(n));
    }
    assert!(
        wait_for(Duration::from_secs(30), || outbox(&env, "ops", "delivered")
            >= 10),
        "{}",
        env.log()
    );

    let _restart = RestartGuard;
    rabbit::rabbitmqctl("stop_app");
    let delivered_at_stop = outbox(&env, "ops", "delivered");
    for n in 30..40 {
        env.deliver(&format!("m{n}"), &message(n));
    }
    let reconnecting = wait_for(Duration::from_secs(30), || {
        http_get(env.port, "/readyz").is_some_and(|r| {
            r.contains("\"reconnecting\"") && r.contains("cannot connect to the broker")
        })
    });
    let stored_while_down = wait_for(Duration::from_secs(30), || {
        env.db()
            .query_row("SELECT count(*) FROM reports", [], |r| r.get::<_, i64>(0))
            .unwrap()
            == 40
    });
    rabbit::rabbitmqctl("start_app");
    assert!(reconnecting, "{}", env.log());
    assert!(stored_while_down, "intake goes on while the broker is down");
    assert!(delivered_at_stop < 40, "the stop came mid-stream");

    assert!(
        wait_for(Duration::from_secs(60), || outbox(&env, "ops", "delivered")
            == 40),
        "{}",
        env.log()
    );
    // The broker closed every connection when it stopped: the consumer connects afterwards.
    let consumer = Consumer::connect();
    let got = distinct(&consumer.drain_until(&queue, 40, Duration::from_secs(20)));
    assert_eq!(got.len(), 40);
    let mut want = event_ids(&env, "ops");
    want.sort();
    let mut seen: Vec<String> = got.keys().cloned().collect();
    seen.sort();
    assert_eq!(seen, want);
    assert!(
        wait_for(Duration::from_secs(10), || {
            http_get(env.port, "/readyz").is_some_and(|r| r.contains("\"status\":\"ok\""))
        }),
        "health recovers: {:?}",
        http_get(env.port, "/readyz")
    );
    consumer.delete(&[&queue, &format!("{queue}.dead")]);
}

#[test]
fn a_kill_9_mid_delivery_then_a_restart_delivers_every_event() {
    let _shared = rabbit::lock();
    let queue = rabbit::unique("phananh-it-kill");
    // 40 events a second: 200 take 5 s, so the kill lands mid-delivery.
    let sinks = amqp_sink(&queue, "rate_per_second = 40");
    let env = Env::new(&sinks, "");
    let env = with_url(env);
    let consumer = Consumer::connect();
    let mut daemon = env.start();
    for n in 0..200 {
        env.deliver(&format!("m{n}"), &message(n));
    }
    assert!(
        wait_for(Duration::from_secs(30), || outbox(&env, "ops", "delivered")
            > 40),
        "{}",
        env.log()
    );
    signal(&daemon, libc::SIGKILL);
    daemon.wait().unwrap();
    let before = outbox(&env, "ops", "delivered");
    assert!(before < 200, "the kill came too late to prove anything");

    let _daemon = env.start();
    assert!(
        wait_for(Duration::from_secs(60), || outbox(&env, "ops", "delivered")
            == 200),
        "{}",
        env.log()
    );
    let got = distinct(&consumer.drain_until(&queue, 200, Duration::from_secs(20)));
    assert_eq!(got.len(), 200, "every event at least once");
    consumer.delete(&[&queue, &format!("{queue}.dead")]);
}

#[test]
fn a_refused_broker_login_waits_for_the_operator_and_a_fixed_url_file_resumes() {
    let _shared = rabbit::lock();
    let queue = rabbit::unique("phananh-it-login");
    let env = with_url(Env::new(
        &format!("[forward]\nmax_attempts = 2\n\n{}", amqp_sink(&queue, "")),
        "",
    ));
    std::fs::write(
        env.path("secrets/amqp-url"),
        "amqp://guest:wrong-password@127.0.0.1:5672/%2f\n",
    )
    .unwrap();
    let _daemon = env.start();
    for n in 0..3 {
        env.deliver(&format!("m{n}"), &message(n));
    }
    let refused = wait_for(Duration::from_secs(30), || {
        http_get(env.port, "/readyz").is_some_and(|r| {
            r.starts_with("HTTP/1.1 503")
                && r.contains("\"needs_operator\"")
                && r.contains("ACCESS_REFUSED")
        })
    });
    assert!(
        refused,
        "{:?}\n{}",
        http_get(env.port, "/readyz"),
        env.log()
    );
    assert!(
        !env.log().contains("wrong-password"),
        "the URL's password is never logged"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        outbox(&env, "ops", "dead"),
        0,
        "a refused login costs no attempts"
    );

    // The operator writes the right URL; the next reconnect reads it, no reload needed.
    std::fs::write(
        env.path("secrets/amqp-url"),
        format!("{}\n", rabbit::URL_WITH_LOGIN),
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(90), || outbox(&env, "ops", "delivered")
            == 3),
        "{}",
        env.log()
    );
    let consumer = Consumer::connect();
    assert_eq!(
        distinct(&consumer.drain_until(&queue, 3, Duration::from_secs(10))).len(),
        3
    );
    consumer.delete(&[&queue, &format!("{queue}.dead")]);
}
